//! Distributing a Service's endpoints over EndpointSlices: a pure plan from the desired
//! endpoints and the slices that exist, in as few writes as possible.
//!
//! ```text
//! desired  {[http:8080]: [a b c … ], [http:9090]: [x]}      existing slices
//!            │ 1. each existing slice keeps the desired endpoints it already holds
//!            │    (refreshed); ones no longer desired are dropped
//!            │ 2. endpoints not in any slice fill slices of their port set that have
//!            │    room (≤ 100), fullest first
//!            │ 3. the rest go into new slices of ≤ 100 — each new slice takes over a
//!            │    slice that would be deleted (an update) before a create is planned
//!            ▼ 4. slices left empty, of ports no longer desired, of another address
//!              type or owned by an older Service of the same name are deleted
//! ```
//!
//! A Service with no endpoints at all keeps one empty "placeholder" slice, as Kubernetes
//! does. Slices whose content is unchanged are not written.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::desired::{endpoint_key, service_labels, PortKey, PortSet};

/// Endpoints per slice, Kubernetes's default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// Label naming a slice's Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Label naming a slice's manager.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`LABEL_MANAGED_BY`] (the Kubernetes controller's, so tools
/// that look for it find ours).
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// The only address type this controller writes.
pub const ADDRESS_TYPE: &str = "IPv4";

/// One write the plan asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum SliceAction {
    /// POST this slice (it has `generateName`, no name).
    Create(EndpointSlice),
    /// PUT this slice (name and resourceVersion of the one it replaces).
    Update(EndpointSlice),
    /// DELETE the slice of this name.
    Delete { name: String },
}

/// The labels every slice of `svc` carries.
pub fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = service_labels(svc);
    labels.insert(
        LABEL_SERVICE_NAME.into(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    labels
}

/// The controller reference from a slice to its Service.
pub fn owner_reference(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc.metadata.name.clone().unwrap_or_default(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn owned_by(slice: &EndpointSlice, svc: &Service) -> bool {
    let uid = svc.metadata.uid.as_deref().unwrap_or_default();
    slice
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.kind == "Service" && r.uid == uid)
}

fn port_set(slice: &EndpointSlice) -> PortSet {
    let mut set: Vec<PortKey> = slice
        .ports
        .iter()
        .flatten()
        .map(PortKey::from_discovery)
        .collect();
    set.sort();
    set.dedup();
    set
}

/// A slice as the plan is building it.
struct Working<'a> {
    base: Option<&'a EndpointSlice>,
    ports: PortSet,
    endpoints: Vec<Endpoint>,
}

/// The writes that make `existing` (this Service's managed slices, in any order) hold
/// exactly `desired` (from [`super::desired::slice_endpoints`]).
pub fn plan(
    svc: &Service,
    desired: &BTreeMap<PortSet, Vec<Endpoint>>,
    existing: &[&EndpointSlice],
) -> Vec<SliceAction> {
    let placeholder = desired.values().all(Vec::is_empty);
    let empty: BTreeMap<PortSet, Vec<Endpoint>> = [(PortSet::new(), Vec::new())].into();
    let desired = if placeholder { &empty } else { desired };

    let mut existing: Vec<&EndpointSlice> = existing.to_vec();
    existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));

    // key → the desired endpoint, per port set.
    let wanted: BTreeMap<&PortSet, BTreeMap<String, &Endpoint>> = desired
        .iter()
        .map(|(ports, eps)| (ports, eps.iter().map(|e| (endpoint_key(e), e)).collect()))
        .collect();
    let mut placed: HashSet<(PortSet, String)> = HashSet::new();
    let mut reusable: Vec<&EndpointSlice> = Vec::new();
    let mut working: BTreeMap<PortSet, Vec<Working>> = BTreeMap::new();

    // 1. Keep what existing slices already hold.
    for slice in existing {
        let ports = port_set(slice);
        let Some(want) = (slice.address_type == ADDRESS_TYPE && owned_by(slice, svc))
            .then(|| wanted.get(&ports))
            .flatten()
        else {
            reusable.push(slice);
            continue;
        };
        let mut endpoints = Vec::new();
        for e in &slice.endpoints {
            let key = endpoint_key(e);
            if let Some(d) = want.get(&key) {
                if placed.insert((ports.clone(), key)) {
                    endpoints.push((*d).clone());
                }
            }
        }
        let group = working.entry(ports.clone()).or_default();
        if endpoints.is_empty() && !(placeholder && group.is_empty()) {
            reusable.push(slice);
            continue;
        }
        group.push(Working {
            base: Some(slice),
            ports,
            endpoints,
        });
    }

    // 2 and 3. Place the rest: into slices with room, then into new slices.
    for (ports, eps) in desired {
        let group = working.entry(ports.clone()).or_default();
        let mut rest: Vec<Endpoint> = eps
            .iter()
            .filter(|e| !placed.contains(&(ports.clone(), endpoint_key(e))))
            .cloned()
            .collect();
        let mut order: Vec<usize> = (0..group.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(group[i].endpoints.len()));
        for i in order {
            let room = MAX_ENDPOINTS_PER_SLICE.saturating_sub(group[i].endpoints.len());
            let take = room.min(rest.len());
            group[i].endpoints.extend(rest.drain(..take));
        }
        while !rest.is_empty() {
            let take = MAX_ENDPOINTS_PER_SLICE.min(rest.len());
            group.push(Working {
                base: None,
                ports: ports.clone(),
                endpoints: rest.drain(..take).collect(),
            });
        }
        if placeholder && group.is_empty() {
            group.push(Working {
                base: None,
                ports: ports.clone(),
                endpoints: Vec::new(),
            });
        }
    }

    // New slices take over slices that would be deleted.
    let mut reusable = reusable.into_iter();
    for w in working.values_mut().flatten() {
        if w.base.is_none() {
            w.base = reusable.next();
        }
    }

    let mut actions = Vec::new();
    for w in working.into_values().flatten() {
        let slice = build(svc, &w);
        match w.base {
            None => actions.push(SliceAction::Create(slice)),
            Some(base) if !same_slice(base, &slice) => actions.push(SliceAction::Update(slice)),
            Some(_) => {}
        }
    }
    for slice in reusable {
        actions.push(SliceAction::Delete {
            name: slice.metadata.name.clone().unwrap_or_default(),
        });
    }
    actions
}

fn build(svc: &Service, w: &Working) -> EndpointSlice {
    let mut endpoints = w.endpoints.clone();
    endpoints.sort_by_key(endpoint_key);
    let metadata = match w.base {
        Some(base) => ObjectMeta {
            labels: Some(slice_labels(svc)),
            owner_references: Some(vec![owner_reference(svc)]),
            ..base.metadata.clone()
        },
        None => ObjectMeta {
            generate_name: Some(format!(
                "{}-",
                svc.metadata.name.as_deref().unwrap_or_default()
            )),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(slice_labels(svc)),
            owner_references: Some(vec![owner_reference(svc)]),
            ..Default::default()
        },
    };
    EndpointSlice {
        metadata,
        address_type: ADDRESS_TYPE.into(),
        endpoints,
        ports: Some(w.ports.iter().map(PortKey::to_discovery).collect()),
    }
}

/// Whether the stored slice already says what `want` says (endpoint order, port order and
/// pod resourceVersions in targetRefs aside).
fn same_slice(stored: &EndpointSlice, want: &EndpointSlice) -> bool {
    let norm = |eps: &[Endpoint]| {
        let mut eps: Vec<Endpoint> = eps
            .iter()
            .cloned()
            .map(|mut e| {
                if let Some(r) = e.target_ref.as_mut() {
                    r.resource_version = None;
                }
                e
            })
            .collect();
        eps.sort_by_key(endpoint_key);
        eps
    };
    stored.address_type == want.address_type
        && port_set(stored) == port_set(want)
        && norm(&stored.endpoints) == norm(&want.endpoints)
        && stored.metadata.labels == want.metadata.labels
        && stored.metadata.owner_references == want.metadata.owner_references
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::desired::slice_endpoints;
    use crate::endpoints::desired::tests::{pod, sport, svc};
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn web() -> Service {
        svc(
            "web",
            &[("app", "web")],
            vec![sport("http", 80, IntOrString::String("web".into()))],
        )
    }

    fn pods(n: usize, port: i32) -> Vec<Pod> {
        (0..n)
            .map(|i| {
                pod(
                    &format!("p{port}-{i:03}"),
                    &format!("10.{}.{}.{}", port % 200, i / 250, i % 250 + 1),
                    true,
                    &[("web", port)],
                )
            })
            .collect()
    }

    /// Applies a plan as the API server would, naming created slices s0, s1, ….
    fn apply(existing: &mut Vec<EndpointSlice>, actions: Vec<SliceAction>, next: &mut usize) {
        for a in actions {
            match a {
                SliceAction::Create(mut s) => {
                    assert_eq!(s.metadata.generate_name.as_deref(), Some("web-"));
                    s.metadata.name = Some(format!("web-s{next}"));
                    *next += 1;
                    existing.push(s);
                }
                SliceAction::Update(s) => {
                    let i = existing
                        .iter()
                        .position(|e| e.metadata.name == s.metadata.name)
                        .expect("update of an existing slice");
                    existing[i] = s;
                }
                SliceAction::Delete { name } => {
                    existing.retain(|e| e.metadata.name.as_deref() != Some(name.as_str()))
                }
            }
        }
    }

    fn sync(
        s: &Service,
        pods: &[Pod],
        existing: &mut Vec<EndpointSlice>,
        next: &mut usize,
    ) -> usize {
        let refs: Vec<&Pod> = pods.iter().collect();
        let desired = slice_endpoints(s, &refs);
        let ex: Vec<&EndpointSlice> = existing.iter().collect();
        let actions = plan(s, &desired, &ex);
        let n = actions.len();
        apply(existing, actions, next);
        n
    }

    fn total(existing: &[EndpointSlice]) -> usize {
        existing.iter().map(|s| s.endpoints.len()).sum()
    }

    #[test]
    fn creates_slices_of_at_most_100_with_labels_and_owner() {
        let s = web();
        let (mut ex, mut next) = (Vec::new(), 0);
        sync(&s, &pods(250, 8080), &mut ex, &mut next);
        assert_eq!(ex.len(), 3);
        assert!(ex
            .iter()
            .all(|sl| sl.endpoints.len() <= MAX_ENDPOINTS_PER_SLICE));
        assert_eq!(total(&ex), 250);
        let sl = &ex[0];
        let labels = sl.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_SERVICE_NAME], "web");
        assert_eq!(labels[LABEL_MANAGED_BY], MANAGED_BY);
        assert_eq!(labels["team"], "a");
        let owner = &sl.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Service", "uid-web", Some(true))
        );
        assert_eq!(sl.address_type, "IPv4");
        let port = &sl.ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.port, port.protocol.as_deref()),
            (Some("http"), Some(8080), Some("TCP"))
        );
        // Unchanged state: no writes.
        assert_eq!(sync(&s, &pods(250, 8080), &mut ex, &mut next), 0);
    }

    #[test]
    fn one_pod_change_is_one_update_in_place() {
        let s = web();
        let (mut ex, mut next) = (Vec::new(), 0);
        let mut ps = pods(150, 8080);
        sync(&s, &ps, &mut ex, &mut next);
        ps[7].status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
        let refs: Vec<&Pod> = ps.iter().collect();
        let ex_refs: Vec<&EndpointSlice> = ex.iter().collect();
        let actions = plan(&s, &slice_endpoints(&s, &refs), &ex_refs);
        assert_eq!(actions.len(), 1);
        assert!(matches!(&actions[0], SliceAction::Update(_)));
        // Removing a pod and adding another: still only in-place updates.
        ps.remove(3);
        ps.push(pod("new", "10.99.0.1", true, &[("web", 8080)]));
        let refs: Vec<&Pod> = ps.iter().collect();
        let actions = plan(&s, &slice_endpoints(&s, &refs), &ex_refs);
        assert!(
            actions.iter().all(|a| matches!(a, SliceAction::Update(_))),
            "{actions:?}"
        );
        apply(&mut ex, actions, &mut next);
        assert_eq!(total(&ex), 150);
    }

    #[test]
    fn different_port_resolution_goes_to_different_slices_and_stale_ones_are_reused() {
        let s = web();
        let (mut ex, mut next) = (Vec::new(), 0);
        let mut ps = pods(3, 8080);
        ps.extend(pods(2, 9090));
        sync(&s, &ps, &mut ex, &mut next);
        assert_eq!(ex.len(), 2);
        // All pods move to 7070: the two slices are reused for the new port set.
        let moved = pods(5, 7070);
        let refs: Vec<&Pod> = moved.iter().collect();
        let ex_refs: Vec<&EndpointSlice> = ex.iter().collect();
        let actions = plan(&s, &slice_endpoints(&s, &refs), &ex_refs);
        assert_eq!(actions.len(), 2, "{actions:?}");
        assert!(actions.iter().any(|a| matches!(a, SliceAction::Update(_))));
        assert!(actions
            .iter()
            .any(|a| matches!(a, SliceAction::Delete { .. })));
        apply(&mut ex, actions, &mut next);
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].ports.as_ref().unwrap()[0].port, Some(7070));
        assert_eq!(total(&ex), 5);
    }

    #[test]
    fn no_endpoints_keeps_one_placeholder() {
        let s = web();
        let (mut ex, mut next) = (Vec::new(), 0);
        sync(&s, &pods(150, 8080), &mut ex, &mut next);
        assert_eq!(ex.len(), 2);
        sync(&s, &[], &mut ex, &mut next);
        assert_eq!(ex.len(), 1);
        assert!(ex[0].endpoints.is_empty());
        assert_eq!(sync(&s, &[], &mut ex, &mut next), 0);
        // From nothing: one placeholder is created.
        let (mut ex2, mut next2) = (Vec::new(), 0);
        sync(&s, &[], &mut ex2, &mut next2);
        assert_eq!(ex2.len(), 1);
        // Pods arrive: the placeholder is filled, not replaced.
        assert_eq!(sync(&s, &pods(2, 8080), &mut ex2, &mut next2), 1);
        assert_eq!((ex2.len(), total(&ex2)), (1, 2));
    }

    #[test]
    fn duplicates_and_foreign_owner_slices_are_cleaned() {
        let s = web();
        let (mut ex, mut next) = (Vec::new(), 0);
        sync(&s, &pods(3, 8080), &mut ex, &mut next);
        // A stale copy of the same endpoints (e.g. written by an earlier leader).
        let mut dup = ex[0].clone();
        dup.metadata.name = Some("web-dup".into());
        ex.push(dup);
        // A slice of an older Service of the same name.
        let mut old = ex[0].clone();
        old.metadata.name = Some("web-old".into());
        old.metadata.owner_references.as_mut().unwrap()[0].uid = "uid-older".into();
        ex.push(old);
        sync(&s, &pods(3, 8080), &mut ex, &mut next);
        assert_eq!(ex.len(), 1);
        assert_eq!(total(&ex), 3);
    }
}
