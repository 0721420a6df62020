//! Rendering the desired state as nft scripts: pure functions, no I/O.
//!
//! The proxy's table (family `ip`) has a fixed skeleton and a dynamic part. The skeleton:
//!
//! ```text
//!  nat-prerouting  (nat, prerouting, dstnat)  ─┐
//!  nat-output      (nat, output, dstnat)      ─┴─ jump services
//!  services:  ip daddr . meta l4proto . th dport vmap @service-ips
//!             <node address> meta l4proto . th dport vmap @service-nodeports
//!  nat-postrouting (nat, postrouting, srcnat) ─── jump masquerading
//!  masquerading: packets with MASQUERADE_MARK get the mark cleared and are masqueraded
//!
//!  filter-input   (filter, input,  -10): new → nodeport-endpoints-check, service-endpoints-check
//!  filter-forward (filter, forward, -10): new → service-endpoints-check, cluster-ips-check
//!  filter-output  (filter, output, -10): new → service-endpoints-check, cluster-ips-check
//!  *-endpoints-check: vmap @no-endpoint-services / @no-endpoint-nodeports → goto reject-chain
//!  cluster-ips-check: a ClusterIP on a port it does not serve → goto reject-chain
//! ```
//!
//! The dynamic part, per service port with endpoints: an element in `service-ips` (and in
//! `service-nodeports` for a node port) jumping to its service chain, which marks the
//! packet for masquerading and picks an endpoint chain at random; each endpoint chain
//! DNATs. A service port without endpoints instead has elements in the `no-endpoint-*`
//! maps, so new connections are rejected (TCP reset, ICMP port unreachable otherwise)
//! rather than silently dropped. Rejecting happens in filter chains because `reject` is
//! not allowed in nat chains; they run after the nat chains' DNAT (priority -10 > dstnat),
//! so a ClusterIP still seen there was not DNATed: it has no endpoints, or the port is
//! not one the Service serves.
//!
//! All service traffic is masqueraded (kube-proxy's masquerade-all): without
//! `br_netfilter`, a pod reaching a backend on its own bridge would otherwise get the reply
//! straight from the backend's address and drop it. Node ports on loopback addresses are
//! never DNATed, so `route_localnet` is not needed.
//!
//! Known limit: a pod reaching itself through its own Service ("hairpin") does not work
//! yet. The DNATed packet (source = destination = the pod) passes `nat-prerouting` but
//! never reaches the forward hook on the node (seen on Linux 6.18 with a plain bridge), so
//! the masquerade that would fix it never runs.
//!
//! [`Ruleset`] is the dynamic part as data; [`render_full`] writes a script that rebuilds
//! the whole table in one transaction, [`render_update`] one that turns an applied ruleset
//! into another touching only the chains and elements that differ.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::names;
use super::state::ProxyState;

/// The packet mark bit that asks `nat-postrouting` to masquerade.
pub const MASQUERADE_MARK: u32 = 0x4000;

/// Map: ClusterIP . protocol . port → goto service chain.
pub const SERVICE_IPS: &str = "service-ips";
/// Map: protocol . node port → goto service chain.
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
/// Map: ClusterIP . protocol . port → goto reject-chain, for service ports without endpoints.
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
/// Map: protocol . node port → goto reject-chain, for node ports without endpoints.
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
/// Set of every ClusterIP, to reject traffic to ports a ClusterIP does not serve.
pub const CLUSTER_IPS: &str = "cluster-ips";
/// Set of the addresses node ports are served on, when configured explicitly.
pub const NODEPORT_IPS: &str = "nodeport-ips";

/// What rendering needs besides the state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderConfig {
    /// The nft table (family `ip`) the proxy owns.
    pub table: String,
    /// Addresses node ports are served on; empty means every local address except loopback
    /// (`fib daddr type local`). Loopback addresses in the list are ignored.
    pub nodeport_addresses: Vec<Ipv4Addr>,
}

impl RenderConfig {
    /// A config for `table` serving node ports on every local, non-loopback address.
    pub fn new(table: impl Into<String>) -> RenderConfig {
        RenderConfig {
            table: table.into(),
            nodeport_addresses: Vec::new(),
        }
    }

    fn nodeport_ips(&self) -> Vec<Ipv4Addr> {
        let mut ips: Vec<Ipv4Addr> = self
            .nodeport_addresses
            .iter()
            .copied()
            .filter(|ip| !ip.is_loopback())
            .collect();
        ips.sort();
        ips.dedup();
        ips
    }

    /// The match for packets addressed to this node's node-port addresses.
    fn nodeport_match(&self) -> String {
        if self.nodeport_ips().is_empty() {
            "fib daddr type local ip daddr != 127.0.0.0/8".to_owned()
        } else {
            format!("ip daddr @{NODEPORT_IPS}")
        }
    }
}

/// The dynamic part of the table: per-service and per-endpoint chains with their rules,
/// and the elements of the maps and sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Chain name → its rules, in order.
    pub chains: BTreeMap<String, Vec<String>>,
    /// (map or set name, key) → value (`None` for a set element).
    pub elements: BTreeMap<(&'static str, String), Option<String>>,
}

impl Ruleset {
    /// The ruleset that programs `state`.
    pub fn from_state(state: &ProxyState) -> Ruleset {
        let mut rs = Ruleset::default();
        for (name, port) in &state.services {
            let proto = name.protocol.nft_name();
            let cluster_key = format!("{} . {proto} . {}", port.cluster_ip, port.port);
            let node_key = port.node_port.map(|np| format!("{proto} . {np}"));
            rs.elements
                .insert((CLUSTER_IPS, port.cluster_ip.to_string()), None);

            if port.endpoints.is_empty() {
                let verdict = Some("goto reject-chain".to_owned());
                rs.elements
                    .insert((NO_ENDPOINT_SERVICES, cluster_key), verdict.clone());
                if let Some(key) = node_key {
                    rs.elements.insert((NO_ENDPOINT_NODEPORTS, key), verdict);
                }
                continue;
            }

            let svc_chain = names::service_chain(name);
            let mut picks = Vec::with_capacity(port.endpoints.len());
            for (i, ep) in port.endpoints.iter().enumerate() {
                let ep_chain = names::endpoint_chain(name, ep);
                rs.chains.insert(
                    ep_chain.clone(),
                    vec![format!(
                        "meta l4proto {proto} dnat to {}:{}",
                        ep.ip, ep.port
                    )],
                );
                picks.push(format!("{i} : goto {ep_chain}"));
            }
            rs.chains.insert(
                svc_chain.clone(),
                vec![
                    "jump mark-for-masquerade".to_owned(),
                    format!(
                        "numgen random mod {} vmap {{ {} }}",
                        port.endpoints.len(),
                        picks.join(", ")
                    ),
                ],
            );
            let verdict = Some(format!("goto {svc_chain}"));
            rs.elements
                .insert((SERVICE_IPS, cluster_key), verdict.clone());
            if let Some(key) = node_key {
                rs.elements.insert((SERVICE_NODEPORTS, key), verdict);
            }
        }
        rs
    }

    /// The number of rules in the whole table once this ruleset is applied.
    pub fn rule_count(&self, config: &RenderConfig) -> usize {
        skeleton_rules(config).len() + self.chains.values().map(Vec::len).sum::<usize>()
    }
}

/// A script that rebuilds the table for `state` from scratch, atomically.
pub fn render(config: &RenderConfig, state: &ProxyState) -> String {
    render_full(config, &Ruleset::from_state(state))
}

/// A script that replaces the table with the skeleton plus `ruleset` in one transaction.
///
/// The table is added before it is deleted so the delete cannot fail when it is absent.
pub fn render_full(config: &RenderConfig, ruleset: &Ruleset) -> String {
    let t = &config.table;
    let mut s = String::new();
    let _ = writeln!(s, "add table ip {t}");
    let _ = writeln!(s, "delete table ip {t}");
    let _ = writeln!(s, "add table ip {t}");
    for (map, key_type) in [
        (SERVICE_IPS, "ipv4_addr . inet_proto . inet_service"),
        (SERVICE_NODEPORTS, "inet_proto . inet_service"),
        (
            NO_ENDPOINT_SERVICES,
            "ipv4_addr . inet_proto . inet_service",
        ),
        (NO_ENDPOINT_NODEPORTS, "inet_proto . inet_service"),
    ] {
        let _ = writeln!(s, "add map ip {t} {map} {{ type {key_type} : verdict ; }}");
    }
    let _ = writeln!(s, "add set ip {t} {CLUSTER_IPS} {{ type ipv4_addr ; }}");
    let nodeport_ips = config.nodeport_ips();
    if !nodeport_ips.is_empty() {
        let ips: Vec<String> = nodeport_ips.iter().map(Ipv4Addr::to_string).collect();
        let _ = writeln!(s, "add set ip {t} {NODEPORT_IPS} {{ type ipv4_addr ; }}");
        let _ = writeln!(
            s,
            "add element ip {t} {NODEPORT_IPS} {{ {} }}",
            ips.join(", ")
        );
    }
    for (chain, hook) in SKELETON_CHAINS {
        match hook {
            Some(hook) => {
                let _ = writeln!(s, "add chain ip {t} {chain} {{ {hook} ; policy accept ; }}");
            }
            None => {
                let _ = writeln!(s, "add chain ip {t} {chain}");
            }
        }
    }
    // Declare every dynamic chain before any rule refers to one.
    for chain in ruleset.chains.keys() {
        let _ = writeln!(s, "add chain ip {t} {chain}");
    }
    for (chain, rules) in &ruleset.chains {
        for rule in rules {
            let _ = writeln!(s, "add rule ip {t} {chain} {rule}");
        }
    }
    for (chain, rule) in skeleton_rules(config) {
        let _ = writeln!(s, "add rule ip {t} {chain} {rule}");
    }
    for ((set, key), value) in &ruleset.elements {
        add_element(&mut s, t, set, key, value.as_deref());
    }
    s
}

/// A script that turns the table holding `old` into one holding `new`, or `None` when
/// they are equal.
///
/// Order matters within the transaction: chains are created before elements or other
/// chains refer to them, and removed only after nothing refers to them any more:
/// 1. add new chains (empty), then their rules;
/// 2. flush and refill chains whose rules changed;
/// 3. delete elements that went away or changed, then add new and changed ones;
/// 4. flush every removed chain (dropping its references), then delete them.
pub fn render_update(config: &RenderConfig, old: &Ruleset, new: &Ruleset) -> Option<String> {
    if old == new {
        return None;
    }
    let t = &config.table;
    let mut s = String::new();

    let added: Vec<&String> = new
        .chains
        .keys()
        .filter(|c| !old.chains.contains_key(*c))
        .collect();
    for chain in &added {
        let _ = writeln!(s, "add chain ip {t} {chain}");
    }
    for chain in &added {
        for rule in &new.chains[*chain] {
            let _ = writeln!(s, "add rule ip {t} {chain} {rule}");
        }
    }
    for (chain, rules) in &new.chains {
        if old
            .chains
            .get(chain)
            .is_some_and(|old_rules| old_rules != rules)
        {
            let _ = writeln!(s, "flush chain ip {t} {chain}");
            for rule in rules {
                let _ = writeln!(s, "add rule ip {t} {chain} {rule}");
            }
        }
    }

    for ((set, key), value) in &old.elements {
        if new.elements.get(&(*set, key.clone())) != Some(value) {
            let _ = writeln!(s, "delete element ip {t} {set} {{ {key} }}");
        }
    }
    for ((set, key), value) in &new.elements {
        if old.elements.get(&(*set, key.clone())) != Some(value) {
            add_element(&mut s, t, set, key, value.as_deref());
        }
    }

    let removed: Vec<&String> = old
        .chains
        .keys()
        .filter(|c| !new.chains.contains_key(*c))
        .collect();
    for chain in &removed {
        let _ = writeln!(s, "flush chain ip {t} {chain}");
    }
    for chain in &removed {
        let _ = writeln!(s, "delete chain ip {t} {chain}");
    }
    Some(s)
}

/// A script that removes the table, and succeeds whether or not it exists.
pub fn render_teardown(table: &str) -> String {
    format!("add table ip {table}\ndelete table ip {table}\n")
}

fn add_element(s: &mut String, table: &str, set: &str, key: &str, value: Option<&str>) {
    let _ = match value {
        Some(value) => writeln!(s, "add element ip {table} {set} {{ {key} : {value} }}"),
        None => writeln!(s, "add element ip {table} {set} {{ {key} }}"),
    };
}

/// The skeleton's chains: name and, for base chains, the hook declaration.
const SKELETON_CHAINS: [(&str, Option<&str>); 13] = [
    ("filter-input", Some("type filter hook input priority -10")),
    (
        "filter-forward",
        Some("type filter hook forward priority -10"),
    ),
    (
        "filter-output",
        Some("type filter hook output priority -10"),
    ),
    (
        "nat-prerouting",
        Some("type nat hook prerouting priority -100"),
    ),
    ("nat-output", Some("type nat hook output priority -100")),
    (
        "nat-postrouting",
        Some("type nat hook postrouting priority 100"),
    ),
    ("services", None),
    ("service-endpoints-check", None),
    ("nodeport-endpoints-check", None),
    ("cluster-ips-check", None),
    ("reject-chain", None),
    ("mark-for-masquerade", None),
    ("masquerading", None),
];

/// The skeleton's rules as (chain, rule).
fn skeleton_rules(config: &RenderConfig) -> Vec<(&'static str, String)> {
    let nodeport = config.nodeport_match();
    let mark = format!("{MASQUERADE_MARK:#x}");
    vec![
        (
            "filter-input",
            "ct state new jump nodeport-endpoints-check".into(),
        ),
        (
            "filter-input",
            "ct state new jump service-endpoints-check".into(),
        ),
        (
            "filter-forward",
            "ct state new jump service-endpoints-check".into(),
        ),
        (
            "filter-forward",
            "ct state new jump cluster-ips-check".into(),
        ),
        (
            "filter-output",
            "ct state new jump service-endpoints-check".into(),
        ),
        (
            "filter-output",
            "ct state new jump cluster-ips-check".into(),
        ),
        ("nat-prerouting", "jump services".into()),
        ("nat-output", "jump services".into()),
        ("nat-postrouting", "jump masquerading".into()),
        (
            "services",
            format!("ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}"),
        ),
        (
            "services",
            format!("{nodeport} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"),
        ),
        (
            "service-endpoints-check",
            format!("ip daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}"),
        ),
        (
            "nodeport-endpoints-check",
            format!("{nodeport} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}"),
        ),
        (
            "cluster-ips-check",
            format!("ip daddr @{CLUSTER_IPS} goto reject-chain"),
        ),
        (
            "reject-chain",
            "meta l4proto tcp reject with tcp reset".into(),
        ),
        (
            "reject-chain",
            "reject with icmp type port-unreachable".into(),
        ),
        (
            "mark-for-masquerade",
            format!("meta mark set meta mark | {mark}"),
        ),
        ("masquerading", format!("meta mark & {mark} == 0 return")),
        ("masquerading", format!("meta mark set meta mark ^ {mark}")),
        ("masquerading", "masquerade fully-random".into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::state::tests::{service, slice};

    fn cfg() -> RenderConfig {
        RenderConfig::new("skiff_proxy")
    }

    fn web(endpoints: &[(&str, bool)]) -> ProxyState {
        let svc = service(
            "default",
            "web",
            "ClusterIP",
            "10.96.77.10",
            &[("http", 80, None)],
        );
        let eps = slice("default", "web", "http", 8080, endpoints);
        ProxyState::build([&svc], [&eps])
    }

    fn lines_with<'a>(script: &'a str, needle: &str) -> Vec<&'a str> {
        script.lines().filter(|l| l.contains(needle)).collect()
    }

    #[test]
    fn cluster_ip_service_picks_among_ready_endpoints() {
        let state = web(&[
            ("10.244.0.2", true),
            ("10.244.0.3", true),
            ("10.244.0.4", false),
        ]);
        let script = render(&cfg(), &state);
        let svc = names::service_chain(state.services.keys().next().unwrap());

        assert!(script.starts_with("add table ip skiff_proxy\ndelete table ip skiff_proxy\n"));
        assert!(script.contains(&format!(
            "add element ip skiff_proxy service-ips {{ 10.96.77.10 . tcp . 80 : goto {svc} }}"
        )));
        let pick = lines_with(&script, "numgen random mod 2 vmap");
        assert_eq!(pick.len(), 1, "{script}");
        assert!(pick[0].starts_with(&format!("add rule ip skiff_proxy {svc} ")));
        let dnats = lines_with(&script, "dnat to");
        assert_eq!(dnats.len(), 2, "{script}");
        assert!(dnats[0].ends_with("meta l4proto tcp dnat to 10.244.0.2:8080"));
        assert!(dnats[1].ends_with("meta l4proto tcp dnat to 10.244.0.3:8080"));
        assert!(!script.contains("10.244.0.4"));
        assert!(script.contains("add element ip skiff_proxy cluster-ips { 10.96.77.10 }"));
        assert!(lines_with(&script, "add element ip skiff_proxy no-endpoint-services").is_empty());
        assert!(script.contains("jump mark-for-masquerade"));
        assert!(script.contains("masquerade fully-random"));
        // Every chain a rule refers to is declared before.
        for (i, line) in script.lines().enumerate() {
            let words = line.split([' ', ',']);
            for word in words.filter(|w| w.starts_with("ep-") || w.starts_with("svc-")) {
                let decl = format!("add chain ip skiff_proxy {word}");
                let pos = script.lines().position(|l| l == decl);
                assert!(
                    pos.is_some_and(|p| p <= i),
                    "{word} used before declared:\n{script}"
                );
            }
        }
    }

    #[test]
    fn node_port_service_gets_both_maps() {
        let svc = service(
            "default",
            "web",
            "NodePort",
            "10.96.77.10",
            &[("http", 80, Some(30080))],
        );
        let eps = slice("default", "web", "http", 8080, &[("10.244.0.2", true)]);
        let state = ProxyState::build([&svc], [&eps]);
        let script = render(&cfg(), &state);
        let svc = names::service_chain(state.services.keys().next().unwrap());
        assert!(script.contains(&format!(
            "add element ip skiff_proxy service-nodeports {{ tcp . 30080 : goto {svc} }}"
        )));
        assert!(script.contains(
            "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports"
        ));

        let explicit = RenderConfig {
            table: "skiff_proxy".into(),
            nodeport_addresses: vec![Ipv4Addr::new(192, 168, 1, 5), Ipv4Addr::LOCALHOST],
        };
        let script = render(&explicit, &state);
        assert!(script.contains("add element ip skiff_proxy nodeport-ips { 192.168.1.5 }"));
        assert!(script
            .contains("ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports"));
        assert!(!script.contains("127.0.0.1"));
    }

    #[test]
    fn service_without_endpoints_is_rejected() {
        let svc = service(
            "default",
            "web",
            "NodePort",
            "10.96.77.10",
            &[("http", 80, Some(30080))],
        );
        let eps = slice("default", "web", "http", 8080, &[("10.244.0.2", false)]);
        let state = ProxyState::build([&svc], [&eps]);
        let script = render(&cfg(), &state);
        assert!(script.contains(
            "add element ip skiff_proxy no-endpoint-services { 10.96.77.10 . tcp . 80 : goto reject-chain }"
        ));
        assert!(script.contains(
            "add element ip skiff_proxy no-endpoint-nodeports { tcp . 30080 : goto reject-chain }"
        ));
        assert!(lines_with(&script, "add element ip skiff_proxy service-ips").is_empty());
        assert!(lines_with(&script, "dnat").is_empty());
        assert!(script.contains("reject with tcp reset"));
    }

    #[test]
    fn update_touches_only_what_changed() {
        let cfg = cfg();
        let other = service(
            "default",
            "db",
            "ClusterIP",
            "10.96.0.20",
            &[("", 5432, None)],
        );
        let other_eps = slice("default", "db", "", 5432, &[("10.244.0.9", true)]);
        let svc = service(
            "default",
            "web",
            "ClusterIP",
            "10.96.77.10",
            &[("http", 80, None)],
        );
        let two = slice(
            "default",
            "web",
            "http",
            8080,
            &[("10.244.0.2", true), ("10.244.0.3", true)],
        );
        let one = slice("default", "web", "http", 8080, &[("10.244.0.3", true)]);
        let before = Ruleset::from_state(&ProxyState::build([&svc, &other], [&two, &other_eps]));
        let after = Ruleset::from_state(&ProxyState::build([&svc, &other], [&one, &other_eps]));

        assert_eq!(render_update(&cfg, &before, &before), None);
        let script = render_update(&cfg, &before, &after).unwrap();
        assert!(
            !script.contains("delete table") && !script.contains("db"),
            "{script}"
        );
        let lines: Vec<&str> = script.lines().collect();
        assert!(
            lines[0].starts_with("flush chain ip skiff_proxy svc-"),
            "{script}"
        );
        assert!(lines[1].ends_with("jump mark-for-masquerade"), "{script}");
        assert!(lines[2].contains("numgen random mod 1 vmap"), "{script}");
        assert!(
            lines[3].starts_with("flush chain ip skiff_proxy ep-")
                && lines[3].ends_with("10.244.0.2/8080")
        );
        assert!(
            lines[4].starts_with("delete chain ip skiff_proxy ep-")
                && lines[4].ends_with("10.244.0.2/8080")
        );
        assert_eq!(lines.len(), 5, "{script}");
    }

    #[test]
    fn removal_deletes_elements_before_chains() {
        let cfg = cfg();
        let before = Ruleset::from_state(&web(&[("10.244.0.2", true)]));
        let script = render_update(&cfg, &before, &Ruleset::default()).unwrap();
        let pos = |needle: &str| script.lines().position(|l| l.starts_with(needle)).unwrap();
        assert!(
            pos("delete element ip skiff_proxy service-ips { 10.96.77.10 . tcp . 80 }")
                < pos("flush chain ip skiff_proxy svc-")
        );
        assert!(
            pos("delete element ip skiff_proxy cluster-ips { 10.96.77.10 }") < pos("delete chain")
        );
        assert!(pos("flush chain ip skiff_proxy svc-") < pos("delete chain ip skiff_proxy ep-"));
        assert_eq!(lines_with(&script, "delete chain").len(), 2);

        // Losing every endpoint swaps the service-ips element for a reject.
        let empty = Ruleset::from_state(&web(&[("10.244.0.2", false)]));
        let script = render_update(&cfg, &before, &empty).unwrap();
        assert!(
            script.contains("delete element ip skiff_proxy service-ips { 10.96.77.10 . tcp . 80 }")
        );
        assert!(script.contains("add element ip skiff_proxy no-endpoint-services { 10.96.77.10 . tcp . 80 : goto reject-chain }"));
        assert!(!script.contains("cluster-ips"), "{script}");
    }

    #[test]
    fn rule_count_covers_skeleton_and_services() {
        let cfg = cfg();
        let empty = Ruleset::default();
        let base = empty.rule_count(&cfg);
        assert_eq!(
            base,
            lines_with(&render_full(&cfg, &empty), "add rule").len()
        );
        let rs = Ruleset::from_state(&web(&[("10.244.0.2", true), ("10.244.0.3", true)]));
        assert_eq!(rs.rule_count(&cfg), base + 2 + 2);
    }
}
