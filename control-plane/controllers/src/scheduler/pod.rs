//! What the scheduler keeps of a pod: its identity, its resource request computed once,
//! and its placement constraints compiled — everything the filters and scores read, and
//! nothing else (the informer's full `Pod` is dropped right after conversion).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use super::quantity::Quantity;
use super::selector::{LabelSelector, Labels, NodeSelector, NodeSelectorTerm};
use super::taint::Toleration;

/// Requests a container without a CPU request counts with when scoring (kube-scheduler
/// `DefaultMilliCPURequest`), so that request-less pods still spread.
pub const DEFAULT_MILLI_CPU: i64 = 100;
/// Memory counterpart of [`DEFAULT_MILLI_CPU`] (200 MiB).
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// Amounts of resources. `scalar` holds everything but CPU and memory (ephemeral-storage,
/// hugepages, extended resources), sorted by name, without zero entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// Millicores.
    pub cpu: i64,
    /// Bytes.
    pub memory: i64,
    pub scalar: Vec<(String, i64)>,
}

impl Resources {
    /// Reads a resource list; quantities that do not parse count as zero (the API server
    /// validates them, so this only happens with a foreign writer).
    pub fn from_list(list: Option<&BTreeMap<String, ApiQuantity>>) -> Resources {
        let mut r = Resources::default();
        for (name, q) in list.into_iter().flatten() {
            let parsed = q.0.parse::<Quantity>();
            if parsed.is_err() {
                tracing::warn!(resource = %name, quantity = %q.0, "unparsable quantity counted as zero");
            }
            match name.as_str() {
                "cpu" => r.cpu = parsed.map(|q| q.milli_value()).unwrap_or(0),
                "memory" => r.memory = parsed.map(|q| q.value()).unwrap_or(0),
                "pods" => {}
                _ => r.set_scalar(name, parsed.map(|q| q.value()).unwrap_or(0)),
            }
        }
        r
    }

    pub fn scalar(&self, name: &str) -> i64 {
        self.scalar
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .map(|i| self.scalar[i].1)
            .unwrap_or(0)
    }

    fn set_scalar(&mut self, name: &str, v: i64) {
        match self.scalar.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) if v == 0 => {
                self.scalar.remove(i);
            }
            Ok(i) => self.scalar[i].1 = v,
            Err(_) if v == 0 => {}
            Err(i) => self.scalar.insert(i, (name.to_string(), v)),
        }
    }

    pub fn add(&mut self, o: &Resources) {
        self.cpu = self.cpu.saturating_add(o.cpu);
        self.memory = self.memory.saturating_add(o.memory);
        for (n, v) in &o.scalar {
            let cur = self.scalar(n);
            self.set_scalar(n, cur.saturating_add(*v));
        }
    }

    pub fn sub(&mut self, o: &Resources) {
        self.cpu = self.cpu.saturating_sub(o.cpu);
        self.memory = self.memory.saturating_sub(o.memory);
        for (n, v) in &o.scalar {
            let cur = self.scalar(n);
            self.set_scalar(n, cur.saturating_sub(*v));
        }
    }

    /// Element-wise maximum.
    fn max_with(&mut self, o: &Resources) {
        self.cpu = self.cpu.max(o.cpu);
        self.memory = self.memory.max(o.memory);
        for (n, v) in &o.scalar {
            let cur = self.scalar(n);
            self.set_scalar(n, cur.max(*v));
        }
    }
}

/// A container's requests: `requests`, falling back per resource to `limits` (the API
/// defaulting Kubernetes applies; done here too in case the server did not).
fn container_requests(c: &core::Container) -> Resources {
    let res = c.resources.as_ref();
    let req = res.and_then(|r| r.requests.as_ref());
    let lim = res.and_then(|r| r.limits.as_ref());
    let mut merged: BTreeMap<String, ApiQuantity> = lim.cloned().unwrap_or_default();
    merged.extend(req.cloned().unwrap_or_default());
    Resources::from_list(Some(&merged))
}

/// Whether the container names a CPU / memory request (directly or through a limit).
fn names(c: &core::Container, resource: &str) -> bool {
    let res = c.resources.as_ref();
    res.and_then(|r| r.requests.as_ref())
        .is_some_and(|m| m.contains_key(resource))
        || res
            .and_then(|r| r.limits.as_ref())
            .is_some_and(|m| m.contains_key(resource))
}

/// The pod's effective request as kube-scheduler computes it
/// (`k8s.io/component-helpers/resource.PodRequests`): the containers' sum, raised to each
/// init container's request (restartable "sidecar" init containers add to everything
/// started after them), plus `overhead`. With `non_zero`, a container that names no CPU
/// or memory request counts [`DEFAULT_MILLI_CPU`] / [`DEFAULT_MEMORY`] (for scoring).
pub fn pod_request(spec: &core::PodSpec, non_zero: bool) -> Resources {
    let one = |c: &core::Container| {
        let mut r = container_requests(c);
        if non_zero {
            if !names(c, "cpu") {
                r.cpu = DEFAULT_MILLI_CPU;
            }
            if !names(c, "memory") {
                r.memory = DEFAULT_MEMORY;
            }
        }
        r
    };
    let mut total = Resources::default();
    for c in &spec.containers {
        total.add(&one(c));
    }
    let mut restartable = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = one(c);
        let effective = if c.restart_policy.as_deref() == Some("Always") {
            total.add(&r);
            restartable.add(&r);
            restartable.clone()
        } else {
            let mut t = r;
            t.add(&restartable);
            t
        };
        init_max.max_with(&effective);
    }
    total.max_with(&init_max);
    total.add(&Resources::from_list(spec.overhead.as_ref()));
    total
}

/// One term of required pod (anti-)affinity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodAffinityTerm {
    pub selector: LabelSelector,
    /// Namespaces whose pods the selector looks at; empty with `all_namespaces` false
    /// cannot happen (the pod's own namespace is filled in).
    pub namespaces: Vec<String>,
    /// An empty `namespaceSelector` (`{}`): every namespace.
    pub all_namespaces: bool,
    pub topology_key: String,
}

impl PodAffinityTerm {
    fn compile(t: &core::PodAffinityTerm, own_namespace: &str) -> PodAffinityTerm {
        let mut namespaces = t.namespaces.clone().unwrap_or_default();
        // A non-empty namespaceSelector would need the namespaces' labels, which the
        // scheduler does not watch; it adds no namespaces (documented in mod.rs).
        let all_namespaces = t.namespace_selector.as_ref().is_some_and(|s| {
            s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
        });
        if namespaces.is_empty() && t.namespace_selector.is_none() {
            namespaces.push(own_namespace.to_string());
        }
        PodAffinityTerm {
            selector: LabelSelector::compile(t.label_selector.as_ref()),
            namespaces,
            all_namespaces,
            topology_key: t.topology_key.clone(),
        }
    }

    /// Whether `pod` is one of the pods this term selects.
    pub fn selects(&self, pod: &PodInfo) -> bool {
        (self.all_namespaces || self.namespaces.iter().any(|n| **n == *pod.namespace))
            && self.selector.matches(&pod.labels)
    }
}

/// The scheduling-relevant view of a pod. Two `PodInfo`s compare equal when nothing the
/// scheduler decides on differs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub uid: Arc<str>,
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub labels: Labels,
    /// `spec.priority`; higher is scheduled first.
    pub priority: i32,
    /// What the pod occupies (filters and accounting).
    pub request: Resources,
    /// The request with defaults for unnamed CPU / memory (scores).
    pub non_zero: Resources,
    pub node_selector: Labels,
    pub required_node_affinity: Option<NodeSelector>,
    /// `(weight, term)` of preferred node affinity.
    pub preferred_node_affinity: Vec<(i64, NodeSelectorTerm)>,
    pub tolerations: Vec<Toleration>,
    pub required_pod_affinity: Vec<PodAffinityTerm>,
    pub required_pod_anti_affinity: Vec<PodAffinityTerm>,
    /// UID of the controller ownerReference (replicas of one owner are spread).
    pub owner: Option<Arc<str>>,
}

impl PodInfo {
    pub fn from_pod(pod: &core::Pod) -> PodInfo {
        let meta = &pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_default();
        let default_spec = core::PodSpec::default();
        let spec = pod.spec.as_ref().unwrap_or(&default_spec);
        let affinity = spec.affinity.as_ref();
        let node_aff = affinity.and_then(|a| a.node_affinity.as_ref());
        let terms = |t: Option<&Vec<core::PodAffinityTerm>>| -> Vec<PodAffinityTerm> {
            t.into_iter()
                .flatten()
                .map(|t| PodAffinityTerm::compile(t, &namespace))
                .collect()
        };
        PodInfo {
            uid: Arc::from(meta.uid.clone().unwrap_or_default()),
            name: Arc::from(meta.name.clone().unwrap_or_default()),
            labels: meta.labels.clone().unwrap_or_default(),
            priority: spec.priority.unwrap_or(0),
            request: pod_request(spec, false),
            non_zero: pod_request(spec, true),
            node_selector: spec.node_selector.clone().unwrap_or_default(),
            required_node_affinity: node_aff
                .and_then(|n| {
                    n.required_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .map(NodeSelector::compile),
            preferred_node_affinity: node_aff
                .and_then(|n| {
                    n.preferred_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .into_iter()
                .flatten()
                .map(|p| {
                    (
                        i64::from(p.weight),
                        NodeSelectorTerm::compile(&p.preference),
                    )
                })
                .collect(),
            tolerations: spec
                .tolerations
                .iter()
                .flatten()
                .map(Toleration::from_api)
                .collect(),
            required_pod_affinity: terms(affinity.and_then(|a| a.pod_affinity.as_ref()).and_then(
                |p| {
                    p.required_during_scheduling_ignored_during_execution
                        .as_ref()
                },
            )),
            required_pod_anti_affinity: terms(
                affinity
                    .and_then(|a| a.pod_anti_affinity.as_ref())
                    .and_then(|p| {
                        p.required_during_scheduling_ignored_during_execution
                            .as_ref()
                    }),
            ),
            owner: meta
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .map(|o| Arc::from(o.uid.as_str())),
            namespace: Arc::from(namespace),
        }
    }
}

/// The pod's current `PodScheduled` condition, to write a new one only when it changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScheduledCondition {
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// Where a pod stands, as the informer reports it.
#[derive(Debug)]
pub enum PodView {
    /// Pending, unbound, ours to schedule.
    Unassigned(PodInfo, Option<ScheduledCondition>),
    /// Bound to `node` and still occupying it (not Succeeded / Failed).
    Assigned(PodInfo, String),
    /// Finished, or unbound and being deleted, or another scheduler's: holds nothing and
    /// is not ours to place.
    Inactive,
}

/// Classifies `pod` for a scheduler named `scheduler_name`.
pub fn classify(pod: &core::Pod, scheduler_name: &str) -> PodView {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded") | Some("Failed")) {
        return PodView::Inactive;
    }
    let spec = pod.spec.as_ref();
    if let Some(node) = spec
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
    {
        return PodView::Assigned(PodInfo::from_pod(pod), node.to_string());
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return PodView::Inactive;
    }
    let name = spec
        .and_then(|s| s.scheduler_name.as_deref())
        .filter(|n| !n.is_empty())
        .unwrap_or("default-scheduler");
    if name != scheduler_name {
        return PodView::Inactive;
    }
    let cond = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
        .map(|c| ScheduledCondition {
            status: c.status.clone(),
            reason: c.reason.clone().unwrap_or_default(),
            message: c.message.clone().unwrap_or_default(),
        });
    PodView::Unassigned(PodInfo::from_pod(pod), cond)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use serde_json::json;

    pub fn pod_from_json(v: serde_json::Value) -> core::Pod {
        serde_json::from_value(v).expect("valid pod json")
    }

    fn container(name: &str, requests: serde_json::Value) -> serde_json::Value {
        json!({"name": name, "image": "x", "resources": {"requests": requests}})
    }

    #[test]
    fn request_is_sum_of_containers_raised_to_init_containers_plus_overhead() {
        let pod = pod_from_json(json!({
            "metadata": {"name": "p", "namespace": "d", "uid": "u"},
            "spec": {
                "containers": [
                    container("a", json!({"cpu": "100m", "memory": "64Mi"})),
                    container("b", json!({"cpu": "0.2", "memory": "64Mi"})),
                ],
                "initContainers": [
                    container("i1", json!({"cpu": "1", "memory": "1Mi"})),
                    container("i2", json!({"cpu": "50m", "memory": "256Mi"})),
                ],
                "overhead": {"cpu": "10m", "memory": "1Mi"}
            }
        }));
        let info = PodInfo::from_pod(&pod);
        assert_eq!(info.request.cpu, 1000 + 10);
        assert_eq!(info.request.memory, (256 + 1) << 20);
    }

    #[test]
    fn sidecar_init_containers_add_to_the_pod() {
        let mut sidecar = container("s", json!({"cpu": "100m"}));
        sidecar["restartPolicy"] = json!("Always");
        let pod = pod_from_json(json!({
            "metadata": {"name": "p"},
            "spec": {
                "containers": [container("a", json!({"cpu": "200m"}))],
                "initContainers": [sidecar, container("i", json!({"cpu": "250m"}))]
            }
        }));
        // Containers 200m + sidecar 100m = 300m; the later init container runs next to
        // the sidecar: 250m + 100m = 350m, which wins.
        assert_eq!(PodInfo::from_pod(&pod).request.cpu, 350);
    }

    #[test]
    fn limits_stand_in_for_missing_requests_and_non_zero_defaults() {
        let pod = pod_from_json(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "a", "image": "x", "resources": {"limits": {"cpu": "300m", "nvidia.com/gpu": "2"}}},
                {"name": "b", "image": "x"},
                {"name": "c", "image": "x", "resources": {"requests": {"cpu": "0", "memory": "0"}}},
            ]}
        }));
        let info = PodInfo::from_pod(&pod);
        assert_eq!(info.request.cpu, 300);
        assert_eq!(info.request.memory, 0);
        assert_eq!(info.request.scalar("nvidia.com/gpu"), 2);
        // a: memory missing → default; b: both missing → defaults; c: explicit zeros stay.
        assert_eq!(info.non_zero.cpu, 300 + DEFAULT_MILLI_CPU);
        assert_eq!(info.non_zero.memory, 2 * DEFAULT_MEMORY);
    }

    #[test]
    fn resources_arithmetic_keeps_scalars_sorted_and_drops_zeros() {
        let mut a = Resources::default();
        let b = Resources {
            cpu: 5,
            memory: 7,
            scalar: vec![("b".into(), 2), ("z".into(), 1)],
        };
        a.add(&b);
        a.add(&Resources {
            cpu: 0,
            memory: 0,
            scalar: vec![("a".into(), 3)],
        });
        assert_eq!(
            a.scalar,
            vec![("a".into(), 3), ("b".into(), 2), ("z".into(), 1)]
        );
        a.sub(&b);
        assert_eq!((a.cpu, a.memory), (0, 0));
        assert_eq!(a.scalar, vec![("a".into(), 3)]);
    }

    #[test]
    fn classify_by_binding_phase_deletion_and_scheduler_name() {
        let base = json!({"metadata": {"name": "p", "namespace": "d", "uid": "u1",
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "o1", "controller": true}
            ]},
            "spec": {"containers": [container("a", json!({"cpu": "1"}))]}});
        let mut p = base.clone();
        match classify(&pod_from_json(p.clone()), "default-scheduler") {
            PodView::Unassigned(info, None) => assert_eq!(info.owner.as_deref(), Some("o1")),
            other => panic!("unexpected {other:?}"),
        }
        p["spec"]["schedulerName"] = json!("other");
        assert!(matches!(
            classify(&pod_from_json(p.clone()), "default-scheduler"),
            PodView::Inactive
        ));
        p["spec"]["nodeName"] = json!("n1");
        assert!(
            matches!(classify(&pod_from_json(p.clone()), "x"), PodView::Assigned(_, n) if n == "n1")
        );
        p["status"] = json!({"phase": "Succeeded"});
        assert!(matches!(
            classify(&pod_from_json(p), "x"),
            PodView::Inactive
        ));
        let mut d = base.clone();
        d["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        assert!(matches!(
            classify(&pod_from_json(d), "default-scheduler"),
            PodView::Inactive
        ));
        let mut c = base;
        c["status"] = json!({"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "m"}]});
        match classify(&pod_from_json(c), "default-scheduler") {
            PodView::Unassigned(_, Some(cond)) => {
                assert_eq!(
                    (
                        cond.status.as_str(),
                        cond.reason.as_str(),
                        cond.message.as_str()
                    ),
                    ("False", "Unschedulable", "m")
                )
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn affinity_terms_default_to_own_namespace() {
        let pod = pod_from_json(json!({
            "metadata": {"name": "p", "namespace": "team"},
            "spec": {"containers": [], "affinity": {"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "x"}}, "topologyKey": "kubernetes.io/hostname"},
                    {"labelSelector": {"matchLabels": {"app": "x"}}, "topologyKey": "zone", "namespaceSelector": {}},
                    {"labelSelector": {"matchLabels": {"app": "x"}}, "topologyKey": "zone", "namespaces": ["a", "b"]}
                ]}}}
        }));
        let info = PodInfo::from_pod(&pod);
        let t = &info.required_pod_anti_affinity;
        assert_eq!(t[0].namespaces, vec!["team".to_string()]);
        assert!(!t[0].all_namespaces);
        assert!(t[1].all_namespaces);
        assert_eq!(t[2].namespaces, vec!["a".to_string(), "b".to_string()]);
        let mut other = info.clone();
        other.namespace = Arc::from("b");
        other.labels.insert("app".into(), "x".into());
        assert!(!t[0].selects(&other) && t[1].selects(&other) && t[2].selects(&other));
    }
}
