//! What a Service's endpoints should be, from the Service and the pods it selects: pure
//! functions, no I/O.
//!
//! Both outputs start from the same per-pod view ([`PodEndpoint`]): the pod's IPv4
//! address, readiness, whether it is terminating, and the Service ports resolved against
//! the pod's container ports. Then:
//! - [`endpoints_subsets`] packs them into `core/v1 Endpoints` subsets. Subsets group
//!   addresses by the exact set of resolved ports, so pods whose named targetPort resolves
//!   differently land in different subsets. The packing is canonical (sorted, deduplicated)
//!   so the same state always yields the same subsets, and [`repack`] applied to what is
//!   stored tells whether a write is needed.
//! - [`slice_endpoints`] groups `discovery.k8s.io/v1` endpoints by the same port sets for
//!   [`super::slices`] to distribute over EndpointSlices.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, ObjectReference, Pod, Service, ServicePort,
};
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Label on Endpoints and EndpointSlices of headless services (`clusterIP: None`).
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// Endpoints hold at most this many addresses; past it they are truncated and annotated.
pub const MAX_ENDPOINTS_ADDRESSES: usize = 1000;
/// Annotation marking truncated Endpoints.
pub const ANNOTATION_OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";

/// Whether this controller maintains endpoints for `svc`: it has a non-empty selector and
/// is not of type ExternalName. Other Services get endpoints from elsewhere (or none).
pub fn selects_pods(svc: &Service) -> bool {
    let Some(spec) = &svc.spec else {
        return false;
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return false;
    }
    spec.selector.as_ref().is_some_and(|s| !s.is_empty())
}

/// Whether every `key=value` of `selector` is among `labels` (a Service selector is a
/// plain equality map).
pub fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// Whether `svc` (which [`selects_pods`]) selects `pod`: same namespace, labels match.
pub fn service_selects(svc: &Service, pod: &Pod) -> bool {
    if svc.metadata.namespace != pod.metadata.namespace {
        return false;
    }
    svc.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|sel| !sel.is_empty() && selector_matches(sel, pod.metadata.labels.as_ref()))
}

/// The labels Endpoints and EndpointSlices of `svc` carry besides their own: the
/// Service's labels, plus the headless marker for `clusterIP: None`.
pub fn service_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.remove(LABEL_HEADLESS);
    if is_headless(svc) {
        labels.insert(LABEL_HEADLESS.to_string(), String::new());
    }
    labels
}

fn is_headless(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .is_some_and(|ip| ip == "None")
}

/// One resolved port of an endpoint: (name, port, protocol, appProtocol). Ordered, so a
/// sorted `Vec<PortKey>` identifies a port set.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    pub name: String,
    pub port: i32,
    pub protocol: String,
    pub app_protocol: Option<String>,
}

impl PortKey {
    pub fn to_core(&self) -> EndpointPort {
        EndpointPort {
            name: Some(self.name.clone()).filter(|n| !n.is_empty()),
            port: self.port,
            protocol: Some(self.protocol.clone()),
            app_protocol: self.app_protocol.clone(),
        }
    }

    pub fn to_discovery(&self) -> discovery::EndpointPort {
        discovery::EndpointPort {
            name: Some(self.name.clone()),
            port: Some(self.port),
            protocol: Some(self.protocol.clone()),
            app_protocol: self.app_protocol.clone(),
        }
    }

    pub fn from_core(p: &EndpointPort) -> PortKey {
        PortKey {
            name: p.name.clone().unwrap_or_default(),
            port: p.port,
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            app_protocol: p.app_protocol.clone(),
        }
    }

    pub fn from_discovery(p: &discovery::EndpointPort) -> PortKey {
        PortKey {
            name: p.name.clone().unwrap_or_default(),
            port: p.port.unwrap_or(0),
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            app_protocol: p.app_protocol.clone(),
        }
    }
}

/// A sorted, deduplicated set of resolved ports.
pub type PortSet = Vec<PortKey>;

/// A pod as an endpoint of one Service.
#[derive(Clone, Debug, PartialEq)]
pub struct PodEndpoint {
    pub ip: String,
    pub node_name: Option<String>,
    /// Set when the pod's `hostname` and `subdomain` (== the Service name) ask for it.
    pub hostname: Option<String>,
    pub target_ref: ObjectReference,
    /// The pod's Ready condition is True.
    pub ready: bool,
    /// The pod has a deletionTimestamp.
    pub terminating: bool,
    pub ports: PortSet,
}

/// The pod's view as an endpoint of `svc`, or `None` when it cannot be one: terminal
/// (Succeeded/Failed), or without an IPv4 address yet.
pub fn pod_endpoint(svc: &Service, pod: &Pod) -> Option<PodEndpoint> {
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let ip = pod_ipv4(pod)?;
    let spec = pod.spec.as_ref();
    let svc_name = svc.metadata.name.as_deref().unwrap_or_default();
    let hostname = spec
        .filter(|s| s.subdomain.as_deref() == Some(svc_name))
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty());
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map(|ports| {
            let set: BTreeSet<PortKey> = ports
                .iter()
                .filter_map(|sp| {
                    find_port(pod, sp).map(|port| PortKey {
                        name: sp.name.clone().unwrap_or_default(),
                        port,
                        protocol: sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        app_protocol: sp.app_protocol.clone(),
                    })
                })
                .collect();
            set.into_iter().collect()
        })
        .unwrap_or_default();
    Some(PodEndpoint {
        ip,
        node_name: spec.and_then(|s| s.node_name.clone()),
        hostname,
        target_ref: ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        ready: pod_ready(pod),
        terminating: pod.metadata.deletion_timestamp.is_some(),
        ports,
    })
}

/// The pod's Ready condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The pod's first IPv4 address (`status.podIPs`, else `status.podIP`). Slices here are
/// all `addressType: IPv4`.
fn pod_ipv4(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let listed = status.pod_ips.iter().flatten().map(|p| p.ip.as_str());
    listed
        .chain(status.pod_ip.as_deref())
        .find(|ip| ip.parse::<Ipv4Addr>().is_ok())
        .map(str::to_string)
}

/// The port a Service port reaches on `pod`: a numeric targetPort as is (unset: the
/// Service port), a named one looked up among the ports of the pod's containers (and
/// restartable init containers, i.e. sidecars) with the same protocol. `None` when the
/// name is not found.
pub fn find_port(pod: &Pod, sp: &ServicePort) -> Option<i32> {
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(0)) => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let protocol = sp.protocol.as_deref().unwrap_or("TCP");
            let spec = pod.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// The Endpoints subsets of `svc` over the pods it selects (callers pass only selected
/// pods), canonically packed. Terminating pods are left out unless the Service publishes
/// not-ready addresses (then every listed pod is an `addresses` entry). A pod none of
/// whose ports resolves is left out, except for a headless Service without ports.
pub fn endpoints_subsets(svc: &Service, pods: &[&Pod]) -> Vec<EndpointSubset> {
    let spec = svc.spec.as_ref();
    let publish_not_ready = spec
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let has_ports = spec
        .and_then(|s| s.ports.as_ref())
        .is_some_and(|p| !p.is_empty());
    let mut entries = Vec::new();
    for pod in pods {
        let Some(ep) = pod_endpoint(svc, pod) else {
            continue;
        };
        if ep.terminating && !publish_not_ready {
            continue;
        }
        if has_ports && ep.ports.is_empty() {
            continue;
        }
        if !has_ports && !is_headless(svc) {
            continue;
        }
        let address = EndpointAddress {
            ip: ep.ip,
            hostname: ep.hostname,
            node_name: ep.node_name,
            target_ref: Some(ep.target_ref),
        };
        entries.push(Entry {
            address,
            ready: publish_not_ready || ep.ready,
            ports: ep.ports,
        });
    }
    pack(entries)
}

struct Entry {
    address: EndpointAddress,
    ready: bool,
    ports: PortSet,
}

/// `subsets` in canonical form: one subset per distinct port set (ordered by it), each
/// address once (ready wins over not-ready), addresses ordered by IP then target, ports
/// sorted, empty lists as `None`. Applied to both what is desired and what is stored, it
/// makes "equal after repacking" mean "no write needed".
pub fn repack(subsets: &[EndpointSubset]) -> Vec<EndpointSubset> {
    let mut entries = Vec::new();
    for s in subsets {
        let set: BTreeSet<PortKey> = s.ports.iter().flatten().map(PortKey::from_core).collect();
        let ports: PortSet = set.into_iter().collect();
        for (list, ready) in [(&s.addresses, true), (&s.not_ready_addresses, false)] {
            for a in list.iter().flatten() {
                entries.push(Entry {
                    address: normalize_address(a),
                    ready,
                    ports: ports.clone(),
                });
            }
        }
    }
    pack(entries)
}

fn normalize_address(a: &EndpointAddress) -> EndpointAddress {
    let mut a = a.clone();
    if let Some(r) = a.target_ref.as_mut() {
        // A pod's resourceVersion changes on every status write; it says nothing about
        // the endpoint (kube ignores it when comparing too).
        r.resource_version = None;
    }
    a
}

fn address_order(a: &EndpointAddress) -> (String, String, String) {
    let r = a.target_ref.as_ref();
    (
        a.ip.clone(),
        r.and_then(|r| r.name.clone()).unwrap_or_default(),
        r.and_then(|r| r.uid.clone()).unwrap_or_default(),
    )
}

fn pack(entries: Vec<Entry>) -> Vec<EndpointSubset> {
    // port set → address key → (address, ready)
    type Group = BTreeMap<(String, String, String), (EndpointAddress, bool)>;
    let mut groups: BTreeMap<PortSet, Group> = BTreeMap::new();
    for e in entries {
        let group = groups.entry(e.ports).or_default();
        let key = address_order(&e.address);
        match group.get_mut(&key) {
            Some((_, ready)) => *ready |= e.ready,
            None => {
                group.insert(key, (e.address, e.ready));
            }
        }
    }
    groups
        .into_iter()
        .map(|(ports, group)| {
            let (ready, not_ready): (Vec<_>, Vec<_>) = group.into_values().partition(|(_, r)| *r);
            let list = |v: Vec<(EndpointAddress, bool)>| {
                Some(v.into_iter().map(|(a, _)| a).collect::<Vec<_>>()).filter(|v| !v.is_empty())
            };
            EndpointSubset {
                addresses: list(ready),
                not_ready_addresses: list(not_ready),
                ports: Some(ports.iter().map(PortKey::to_core).collect::<Vec<_>>())
                    .filter(|p| !p.is_empty()),
            }
        })
        .collect()
}

/// Cuts `subsets` down to [`MAX_ENDPOINTS_ADDRESSES`] addresses, dropping not-ready ones
/// first, then ready ones from the last subsets. Returns whether anything was cut (the
/// Endpoints then carry [`ANNOTATION_OVER_CAPACITY`]).
pub fn truncate(subsets: &mut Vec<EndpointSubset>) -> bool {
    let count = |v: &Option<Vec<EndpointAddress>>| v.as_ref().map_or(0, Vec::len);
    let ready: usize = subsets.iter().map(|s| count(&s.addresses)).sum();
    let not_ready: usize = subsets.iter().map(|s| count(&s.not_ready_addresses)).sum();
    if ready + not_ready <= MAX_ENDPOINTS_ADDRESSES {
        return false;
    }
    let mut room_not_ready = MAX_ENDPOINTS_ADDRESSES.saturating_sub(ready);
    let mut room_ready = MAX_ENDPOINTS_ADDRESSES;
    for s in subsets.iter_mut() {
        if let Some(a) = s.addresses.as_mut() {
            a.truncate(room_ready);
            room_ready -= a.len();
        }
        if let Some(a) = s.not_ready_addresses.as_mut() {
            a.truncate(room_not_ready);
            room_not_ready -= a.len();
        }
        if s.addresses.as_ref().is_some_and(Vec::is_empty) {
            s.addresses = None;
        }
        if s.not_ready_addresses.as_ref().is_some_and(Vec::is_empty) {
            s.not_ready_addresses = None;
        }
    }
    subsets.retain(|s| s.addresses.is_some() || s.not_ready_addresses.is_some());
    true
}

/// The EndpointSlice endpoints of `svc` over the pods it selects, grouped by resolved
/// port set; each group's endpoints sorted by [`endpoint_key`]. Terminating pods are
/// included with `ready: false` (unless the Service publishes not-ready addresses),
/// `serving` from readiness and `terminating: true`.
pub fn slice_endpoints(
    svc: &Service,
    pods: &[&Pod],
) -> BTreeMap<PortSet, Vec<discovery::Endpoint>> {
    let publish_not_ready = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let mut groups: BTreeMap<PortSet, BTreeMap<String, discovery::Endpoint>> = BTreeMap::new();
    for pod in pods {
        let Some(ep) = pod_endpoint(svc, pod) else {
            continue;
        };
        let ready = publish_not_ready || (ep.ready && !ep.terminating);
        let serving = publish_not_ready || ep.ready;
        let endpoint = discovery::Endpoint {
            addresses: vec![ep.ip],
            conditions: Some(discovery::EndpointConditions {
                ready: Some(ready),
                serving: Some(serving),
                terminating: Some(ep.terminating),
            }),
            hostname: ep.hostname,
            node_name: ep.node_name,
            target_ref: Some(ep.target_ref),
            ..Default::default()
        };
        groups
            .entry(ep.ports)
            .or_default()
            .insert(endpoint_key(&endpoint), endpoint);
    }
    groups
        .into_iter()
        .map(|(ports, eps)| (ports, eps.into_values().collect()))
        .collect()
}

/// An endpoint's identity across syncs: its pod's uid, else its first address.
pub fn endpoint_key(e: &discovery::Endpoint) -> String {
    e.target_ref
        .as_ref()
        .and_then(|r| r.uid.clone())
        .filter(|u| !u.is_empty())
        .or_else(|| e.addresses.first().cloned())
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodIP, PodSpec, PodStatus, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;

    pub fn svc(name: &str, selector: &[(&str, &str)], ports: Vec<ServicePort>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some([("team".to_string(), "a".to_string())].into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(
                    selector
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ports: Some(ports),
                cluster_ip: Some("10.96.0.10".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn sport(name: &str, port: i32, target: IntOrString) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            port,
            protocol: Some("TCP".into()),
            target_port: Some(target),
            ..Default::default()
        }
    }

    pub fn pod(name: &str, ip: &str, ready: bool, container_ports: &[(&str, i32)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(
                        container_ports
                            .iter()
                            .map(|(n, p)| ContainerPort {
                                name: Some(n.to_string()),
                                container_port: *p,
                                ..Default::default()
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(ip.into()).filter(|i: &String| !i.is_empty()),
                pod_ips: Some(vec![PodIP { ip: ip.into() }]).filter(|_| !ip.is_empty()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn ips(list: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        list.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn ready_and_not_ready_addresses_with_numeric_target_port() {
        let s = svc(
            "web",
            &[("app", "web")],
            vec![sport("http", 80, IntOrString::Int(8080))],
        );
        let a = pod("a", "10.0.0.2", true, &[]);
        let b = pod("b", "10.0.0.1", false, &[]);
        let subsets = endpoints_subsets(&s, &[&a, &b]);
        assert_eq!(subsets.len(), 1);
        assert_eq!(ips(&subsets[0].addresses), vec!["10.0.0.2"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), vec!["10.0.0.1"]);
        let ports = subsets[0].ports.as_ref().unwrap();
        assert_eq!(ports[0].port, 8080);
        assert_eq!(ports[0].name.as_deref(), Some("http"));
        let addr = &subsets[0].addresses.as_ref().unwrap()[0];
        assert_eq!(addr.node_name.as_deref(), Some("node-1"));
        let r = addr.target_ref.as_ref().unwrap();
        assert_eq!(
            (
                r.kind.as_deref(),
                r.name.as_deref(),
                r.uid.as_deref(),
                r.namespace.as_deref()
            ),
            (Some("Pod"), Some("a"), Some("uid-a"), Some("default"))
        );
    }

    #[test]
    fn named_target_port_resolving_differently_splits_subsets() {
        let s = svc(
            "web",
            &[("app", "web")],
            vec![sport("http", 80, IntOrString::String("web".into()))],
        );
        let a = pod("a", "10.0.0.1", true, &[("web", 8080)]);
        let b = pod("b", "10.0.0.2", true, &[("web", 9090)]);
        let c = pod("c", "10.0.0.3", true, &[("web", 8080)]);
        let d = pod("d", "10.0.0.4", true, &[("other", 1)]);
        let subsets = endpoints_subsets(&s, &[&a, &b, &c, &d]);
        assert_eq!(subsets.len(), 2);
        assert_eq!(subsets[0].ports.as_ref().unwrap()[0].port, 8080);
        assert_eq!(ips(&subsets[0].addresses), vec!["10.0.0.1", "10.0.0.3"]);
        assert_eq!(subsets[1].ports.as_ref().unwrap()[0].port, 9090);
        assert_eq!(ips(&subsets[1].addresses), vec!["10.0.0.2"]);
    }

    #[test]
    fn publish_not_ready_and_terminating_and_terminal_and_no_ip() {
        let mut s = svc(
            "web",
            &[("app", "web")],
            vec![sport("http", 80, IntOrString::Int(80))],
        );
        let not_ready = pod("a", "10.0.0.1", false, &[]);
        let mut terminating = pod("b", "10.0.0.2", true, &[]);
        terminating.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let mut done = pod("c", "10.0.0.3", false, &[]);
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let no_ip = pod("d", "", false, &[]);
        let pods = [&not_ready, &terminating, &done, &no_ip];
        let subsets = endpoints_subsets(&s, &pods);
        assert_eq!(ips(&subsets[0].addresses), Vec::<&str>::new());
        assert_eq!(ips(&subsets[0].not_ready_addresses), vec!["10.0.0.1"]);
        s.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let subsets = endpoints_subsets(&s, &pods);
        assert_eq!(ips(&subsets[0].addresses), vec!["10.0.0.1", "10.0.0.2"]);
        assert_eq!(subsets[0].not_ready_addresses, None);
    }

    #[test]
    fn repack_of_reordered_stored_subsets_equals_desired() {
        let s = svc(
            "web",
            &[("app", "web")],
            vec![
                sport("a", 80, IntOrString::Int(80)),
                sport("b", 81, IntOrString::Int(81)),
            ],
        );
        let p1 = pod("p1", "10.0.0.1", true, &[]);
        let p2 = pod("p2", "10.0.0.2", false, &[]);
        let p3 = pod("p3", "10.0.0.3", true, &[]);
        let desired = endpoints_subsets(&s, &[&p3, &p1, &p2]);
        // What another writer might have stored: same content, other order, one port per
        // subset, a pod resourceVersion in the targetRef.
        let mut stored = desired.clone();
        for sub in &mut stored {
            sub.addresses.as_mut().unwrap().reverse();
            sub.ports.as_mut().unwrap().reverse();
            for a in sub.addresses.iter_mut().flatten() {
                a.target_ref.as_mut().unwrap().resource_version = Some("42".into());
            }
        }
        assert_ne!(stored, desired);
        assert_eq!(repack(&stored), desired);
        assert_eq!(repack(&desired), desired);
        // A really different state is not equal.
        let fewer = endpoints_subsets(&s, &[&p1, &p2]);
        assert_ne!(repack(&fewer), desired);
    }

    #[test]
    fn headless_without_ports_lists_addresses() {
        let mut s = svc("db", &[("app", "web")], vec![]);
        s.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let p = pod("p", "10.0.0.1", true, &[]);
        let subsets = endpoints_subsets(&s, &[&p]);
        assert_eq!(ips(&subsets[0].addresses), vec!["10.0.0.1"]);
        assert_eq!(subsets[0].ports, None);
        assert_eq!(
            service_labels(&s).get(LABEL_HEADLESS).map(String::as_str),
            Some("")
        );
        // With a cluster IP and no ports: nothing.
        s.spec.as_mut().unwrap().cluster_ip = Some("10.96.0.1".into());
        assert!(endpoints_subsets(&s, &[&p]).is_empty());
    }

    #[test]
    fn hostname_only_for_matching_subdomain() {
        let s = svc(
            "web",
            &[("app", "web")],
            vec![sport("http", 80, IntOrString::Int(80))],
        );
        let mut p = pod("p", "10.0.0.1", true, &[]);
        p.spec.as_mut().unwrap().hostname = Some("h".into());
        assert_eq!(pod_endpoint(&s, &p).unwrap().hostname, None);
        p.spec.as_mut().unwrap().subdomain = Some("web".into());
        assert_eq!(pod_endpoint(&s, &p).unwrap().hostname.as_deref(), Some("h"));
    }

    #[test]
    fn truncation_drops_not_ready_first() {
        let addr = |i: usize| EndpointAddress {
            ip: format!("10.1.{}.{}", i / 256, i % 256),
            ..Default::default()
        };
        let mut subsets = vec![EndpointSubset {
            addresses: Some((0..900).map(addr).collect()),
            not_ready_addresses: Some((900..1200).map(addr).collect()),
            ports: None,
        }];
        assert!(truncate(&mut subsets));
        assert_eq!(subsets[0].addresses.as_ref().unwrap().len(), 900);
        assert_eq!(subsets[0].not_ready_addresses.as_ref().unwrap().len(), 100);
        let mut small = vec![EndpointSubset {
            addresses: Some((0..10).map(addr).collect()),
            ..Default::default()
        }];
        assert!(!truncate(&mut small));
    }

    #[test]
    fn slice_conditions_for_terminating_pods() {
        let s = svc(
            "web",
            &[("app", "web")],
            vec![sport("http", 80, IntOrString::Int(8080))],
        );
        let mut t = pod("t", "10.0.0.1", true, &[]);
        t.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let r = pod("r", "10.0.0.2", true, &[]);
        let n = pod("n", "10.0.0.3", false, &[]);
        let groups = slice_endpoints(&s, &[&t, &r, &n]);
        assert_eq!(groups.len(), 1);
        let eps = groups.values().next().unwrap();
        let cond = |name: &str| {
            let e = eps
                .iter()
                .find(|e| e.target_ref.as_ref().unwrap().name.as_deref() == Some(name))
                .unwrap();
            let c = e.conditions.as_ref().unwrap();
            (c.ready.unwrap(), c.serving.unwrap(), c.terminating.unwrap())
        };
        assert_eq!(cond("t"), (false, true, true));
        assert_eq!(cond("r"), (true, true, false));
        assert_eq!(cond("n"), (false, false, false));
    }

    #[test]
    fn selection_rules() {
        let s = svc("web", &[("app", "web")], vec![]);
        let p = pod("p", "10.0.0.1", true, &[]);
        assert!(selects_pods(&s) && service_selects(&s, &p));
        let mut other_ns = p.clone();
        other_ns.metadata.namespace = Some("x".into());
        assert!(!service_selects(&s, &other_ns));
        let empty = svc("e", &[], vec![]);
        assert!(!selects_pods(&empty) && !service_selects(&empty, &p));
        let mut ext = s.clone();
        ext.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        assert!(!selects_pods(&ext));
    }
}
