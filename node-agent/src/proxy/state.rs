//! The proxy's desired state: which service ports exist and which endpoints serve them.
//!
//! Built from Services and `discovery.k8s.io/v1` EndpointSlices without any I/O. The API
//! objects are read defensively: anything this proxy cannot program (headless or
//! ExternalName Services, IPv6, a port out of range, a slice for a Service that is not
//! known) is skipped with a debug log, never a panic.
//!
//! A worked example. The Service `default/web` (ClusterIP 10.96.77.10, port `http`
//! 80/TCP → targetPort 8080, nodePort 30080) and one slice labelled
//! `kubernetes.io/service-name: web` with port `http` 8080/TCP and two endpoints, 10.244.0.2
//! (ready) and 10.244.0.3 (`ready: false`), give one entry:
//!
//! ```text
//! default/web:http/TCP → 10.96.77.10:80 (nodePort 30080) → [10.244.0.2:8080]
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tracing::debug;

/// The label an EndpointSlice carries naming the Service it belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Objects with this label are handled by another proxy (kube-proxy's convention).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";

/// A transport protocol a service port can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP, the default when a port names none.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Parses a Kubernetes protocol name (`TCP`, `UDP`, `SCTP`); `None` means TCP.
    /// Returns `None` for anything else.
    pub fn parse(name: Option<&str>) -> Option<Protocol> {
        match name.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The protocol's name in nftables (`tcp`, `udp`, `sctp`).
    pub fn nft_name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// Identifies one port of one Service: what kube-proxy calls a `ServicePortName`.
///
/// Ordered by namespace, name, port name, protocol, so rendering is deterministic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The port's name; empty for the single unnamed port a Service may have.
    pub port: String,
    /// The port's protocol.
    pub protocol: Protocol,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}:{}/{}",
            self.namespace,
            self.name,
            self.port,
            self.protocol.nft_name()
        )
    }
}

/// One backend of a service port: where a connection is DNATed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// The endpoint's (pod's) address.
    pub ip: Ipv4Addr,
    /// The target port, from the EndpointSlice port of the service port's name.
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.ip, self.port)
    }
}

/// What the proxy programs for one service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// The Service's ClusterIP.
    pub cluster_ip: Ipv4Addr,
    /// The Service port (the destination port clients use with the ClusterIP).
    pub port: u16,
    /// The node port, for Services of type NodePort or LoadBalancer that have one.
    pub node_port: Option<u16>,
    /// Endpoints that receive new connections, sorted and without duplicates. Empty means
    /// new connections are rejected.
    pub endpoints: Vec<Endpoint>,
}

/// Every service port this proxy programs, keyed and ordered by [`ServicePortName`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyState {
    /// The service ports.
    pub services: BTreeMap<ServicePortName, ServicePort>,
}

impl ProxyState {
    /// Builds the state from Services and EndpointSlices, skipping what cannot be
    /// programmed (see the module docs).
    ///
    /// Endpoints are those with `conditions.ready` not `false`; when a service port has
    /// none, endpoints that are serving while terminating are used instead, so
    /// connections keep working through a rolling update of the last replica.
    pub fn build<'a>(
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> ProxyState {
        let mut ports = BTreeMap::new();
        for service in services {
            add_service(&mut ports, service);
        }

        // Per service port: (ready, serving-but-terminating) endpoints.
        let mut found: BTreeMap<ServicePortName, (BTreeSet<Endpoint>, BTreeSet<Endpoint>)> =
            BTreeMap::new();
        for slice in slices {
            add_slice(&ports, &mut found, slice);
        }

        let services = ports
            .into_iter()
            .map(|(name, mut port)| {
                if let Some((ready, terminating)) = found.remove(&name) {
                    let chosen = if ready.is_empty() { terminating } else { ready };
                    port.endpoints = chosen.into_iter().collect();
                }
                (name, port)
            })
            .collect();
        ProxyState { services }
    }

    /// The number of endpoints over all service ports.
    pub fn endpoint_count(&self) -> usize {
        self.services.values().map(|p| p.endpoints.len()).sum()
    }
}

fn add_service(ports: &mut BTreeMap<ServicePortName, ServicePort>, service: &Service) {
    let namespace = service.metadata.namespace.as_deref().unwrap_or("default");
    let Some(name) = service.metadata.name.as_deref() else {
        debug!("skipping a Service without a name");
        return;
    };
    if has_label(&service.metadata.labels, SERVICE_PROXY_NAME_LABEL) {
        debug!(%namespace, %name, "skipping Service handled by another proxy");
        return;
    }
    let Some(spec) = &service.spec else {
        debug!(%namespace, %name, "skipping Service without spec");
        return;
    };
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    let with_node_ports = match type_ {
        "ClusterIP" => false,
        "NodePort" | "LoadBalancer" => true,
        other => {
            debug!(%namespace, %name, type_ = other, "skipping Service of a type not proxied");
            return;
        }
    };
    let Some(cluster_ip) = cluster_ipv4(spec) else {
        debug!(%namespace, %name, cluster_ip = ?spec.cluster_ip, "skipping Service without an IPv4 ClusterIP");
        return;
    };
    for sp in spec.ports.iter().flatten() {
        let port_name = sp.name.clone().unwrap_or_default();
        let Some(protocol) = Protocol::parse(sp.protocol.as_deref()) else {
            debug!(%namespace, %name, port = %port_name, protocol = ?sp.protocol, "skipping port with an unknown protocol");
            continue;
        };
        let Some(port) = valid_port(sp.port) else {
            debug!(%namespace, %name, port = %port_name, number = sp.port, "skipping port out of range");
            continue;
        };
        let node_port = if with_node_ports {
            match sp.node_port {
                None => None,
                Some(n) => {
                    let valid = valid_port(n);
                    if valid.is_none() {
                        debug!(%namespace, %name, port = %port_name, node_port = n, "ignoring nodePort out of range");
                    }
                    valid
                }
            }
        } else {
            None
        };
        let key = ServicePortName {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            port: port_name,
            protocol,
        };
        let entry = ServicePort {
            cluster_ip,
            port,
            node_port,
            endpoints: Vec::new(),
        };
        if ports.insert(key.clone(), entry).is_some() {
            debug!(service_port = %key, "duplicate port name in Service; the last one wins");
        }
    }
}

fn add_slice(
    ports: &BTreeMap<ServicePortName, ServicePort>,
    found: &mut BTreeMap<ServicePortName, (BTreeSet<Endpoint>, BTreeSet<Endpoint>)>,
    slice: &EndpointSlice,
) {
    let namespace = slice.metadata.namespace.as_deref().unwrap_or("default");
    let slice_name = slice.metadata.name.as_deref().unwrap_or("");
    if has_label(&slice.metadata.labels, SERVICE_PROXY_NAME_LABEL) {
        debug!(%namespace, slice = %slice_name, "skipping EndpointSlice handled by another proxy");
        return;
    }
    let Some(service) = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
    else {
        debug!(%namespace, slice = %slice_name, "skipping EndpointSlice without {SERVICE_NAME_LABEL}");
        return;
    };
    if slice.address_type != "IPv4" {
        debug!(%namespace, slice = %slice_name, address_type = %slice.address_type, "skipping non-IPv4 EndpointSlice");
        return;
    }
    for slice_port in slice.ports.iter().flatten() {
        let Some(protocol) = Protocol::parse(slice_port.protocol.as_deref()) else {
            debug!(%namespace, slice = %slice_name, protocol = ?slice_port.protocol, "skipping slice port with an unknown protocol");
            continue;
        };
        let key = ServicePortName {
            namespace: namespace.to_owned(),
            name: service.clone(),
            port: slice_port.name.clone().unwrap_or_default(),
            protocol,
        };
        if !ports.contains_key(&key) {
            debug!(service_port = %key, slice = %slice_name, "skipping slice port for an unknown service port");
            continue;
        }
        let Some(target) = slice_port.port.and_then(valid_port) else {
            debug!(service_port = %key, slice = %slice_name, port = ?slice_port.port, "skipping slice port out of range");
            continue;
        };
        let (ready, terminating) = found.entry(key.clone()).or_default();
        for endpoint in &slice.endpoints {
            // All addresses of one endpoint are the same backend; use the first.
            let Some(address) = endpoint.addresses.first() else {
                continue;
            };
            let Ok(ip) = address.parse::<Ipv4Addr>() else {
                debug!(service_port = %key, %address, "skipping endpoint with a non-IPv4 address");
                continue;
            };
            let conditions = endpoint.conditions.as_ref();
            let is_ready = conditions.and_then(|c| c.ready) != Some(false);
            let serving = conditions.and_then(|c| c.serving) != Some(false);
            let is_terminating = conditions.and_then(|c| c.terminating) == Some(true);
            let ep = Endpoint { ip, port: target };
            if is_ready {
                ready.insert(ep);
            } else if serving && is_terminating {
                terminating.insert(ep);
            }
        }
    }
}

fn has_label(labels: &Option<BTreeMap<String, String>>, key: &str) -> bool {
    labels.as_ref().is_some_and(|l| l.contains_key(key))
}

fn cluster_ipv4(spec: &k8s_openapi::api::core::v1::ServiceSpec) -> Option<Ipv4Addr> {
    spec.cluster_ip
        .iter()
        .chain(spec.cluster_ips.iter().flatten())
        .find_map(|ip| ip.parse::<Ipv4Addr>().ok())
        .filter(|ip| !ip.is_unspecified())
}

fn valid_port(port: i32) -> Option<u16> {
    u16::try_from(port).ok().filter(|&p| p != 0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort as ApiServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{
        Endpoint as ApiEndpoint, EndpointConditions, EndpointPort,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    /// A Service with one TCP port per `(name, port, node_port)`.
    pub(crate) fn service(
        ns: &str,
        name: &str,
        type_: &str,
        cluster_ip: &str,
        ports: &[(&str, i32, Option<i32>)],
    ) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(type_.into()),
                cluster_ip: Some(cluster_ip.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|&(n, p, np)| ApiServicePort {
                            name: (!n.is_empty()).then(|| n.into()),
                            port: p,
                            node_port: np,
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// An IPv4 slice for `service` with one TCP port and `(ip, ready)` endpoints.
    pub(crate) fn slice(
        ns: &str,
        service: &str,
        port_name: &str,
        port: i32,
        endpoints: &[(&str, bool)],
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(format!("{service}-abc")),
                labels: Some([(SERVICE_NAME_LABEL.to_owned(), service.to_owned())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: endpoints
                .iter()
                .map(|&(ip, ready)| ApiEndpoint {
                    addresses: vec![ip.into()],
                    conditions: Some(EndpointConditions {
                        ready: Some(ready),
                        serving: Some(ready),
                        terminating: Some(false),
                    }),
                    ..Default::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                name: (!port_name.is_empty()).then(|| port_name.into()),
                port: Some(port),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
        }
    }

    fn key(ns: &str, name: &str, port: &str) -> ServicePortName {
        ServicePortName {
            namespace: ns.into(),
            name: name.into(),
            port: port.into(),
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn ready_endpoints_resolve_target_port_by_name() {
        let svc = service(
            "default",
            "web",
            "NodePort",
            "10.96.77.10",
            &[("http", 80, Some(30080))],
        );
        let eps = slice(
            "default",
            "web",
            "http",
            8080,
            &[
                ("10.244.0.3", true),
                ("10.244.0.2", true),
                ("10.244.0.4", false),
            ],
        );
        let state = ProxyState::build([&svc], [&eps]);
        let port = &state.services[&key("default", "web", "http")];
        assert_eq!(port.cluster_ip, Ipv4Addr::new(10, 96, 77, 10));
        assert_eq!(port.port, 80);
        assert_eq!(port.node_port, Some(30080));
        let ips: Vec<String> = port.endpoints.iter().map(|e| e.to_string()).collect();
        assert_eq!(ips, ["10.244.0.2:8080", "10.244.0.3:8080"]);
    }

    #[test]
    fn terminating_serving_endpoints_are_used_only_without_ready_ones() {
        let svc = service(
            "default",
            "web",
            "ClusterIP",
            "10.96.0.5",
            &[("", 80, None)],
        );
        let mut eps = slice("default", "web", "", 8080, &[("10.244.0.2", false)]);
        eps.endpoints[0].conditions = Some(EndpointConditions {
            ready: Some(false),
            serving: Some(true),
            terminating: Some(true),
        });
        let state = ProxyState::build([&svc], [&eps]);
        assert_eq!(
            state.services[&key("default", "web", "")].endpoints.len(),
            1
        );

        let ready = slice("default", "web", "", 8080, &[("10.244.0.9", true)]);
        let state = ProxyState::build([&svc], [&eps, &ready]);
        let eps = &state.services[&key("default", "web", "")].endpoints;
        assert_eq!(
            eps,
            &[Endpoint {
                ip: Ipv4Addr::new(10, 244, 0, 9),
                port: 8080
            }]
        );
    }

    #[test]
    fn bad_input_is_skipped() {
        let headless = service(
            "default",
            "headless",
            "ClusterIP",
            "None",
            &[("", 80, None)],
        );
        let v6 = service("default", "v6", "ClusterIP", "fd00::1", &[("", 80, None)]);
        let external = service("default", "ext", "ExternalName", "", &[("", 80, None)]);
        let weird = service(
            "default",
            "weird",
            "NodePort",
            "10.96.0.7",
            &[
                ("big", 70000, None),
                ("zero", 0, None),
                ("np", 81, Some(-3)),
            ],
        );
        let mut udp_bad = service(
            "default",
            "proto",
            "ClusterIP",
            "10.96.0.8",
            &[("", 53, None)],
        );
        udp_bad.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].protocol = Some("ICMP".into());
        let no_spec = Service {
            spec: None,
            ..service("default", "nospec", "ClusterIP", "10.96.0.9", &[])
        };

        let unknown = slice("default", "nobody", "", 8080, &[("10.244.0.2", true)]);
        let mut v6_slice = slice("default", "weird", "np", 8080, &[("fd00::2", true)]);
        v6_slice.address_type = "IPv6".into();
        let bad_ip = slice("default", "weird", "np", 8080, &[("not-an-ip", true)]);
        let bad_port = slice("default", "weird", "np", 0, &[("10.244.0.2", true)]);

        let state = ProxyState::build(
            [&headless, &v6, &external, &weird, &udp_bad, &no_spec],
            [&unknown, &v6_slice, &bad_ip, &bad_port],
        );
        let names: Vec<String> = state.services.keys().map(|k| k.to_string()).collect();
        assert_eq!(names, ["default/weird:np/tcp"]);
        let port = &state.services[&key("default", "weird", "np")];
        assert_eq!(port.node_port, None);
        assert!(port.endpoints.is_empty());
    }
}
