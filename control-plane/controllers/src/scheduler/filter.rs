//! Filters: can this pod go on this node? In kube-scheduler's plugin order — node ready,
//! NodeUnschedulable, TaintToleration, NodeAffinity (nodeSelector and required node
//! affinity), NodeResourcesFit, InterPodAffinity — stopping at the first that fails,
//! whose reason is reported.
//!
//! [`PreFilter`] gathers once per pod what depends on all placed pods (pod affinity and
//! anti-affinity), so that each node's check stays cheap.

use std::collections::HashSet;
use std::fmt;

use super::cache::{Cache, NodeInfo, OwnerId};
use super::node::NodeData;
use super::pod::PodInfo;
use super::taint::{tolerated, Effect, Taint};

/// Why a node was filtered out. Borrows from the node so the hot path never allocates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure<'a> {
    NotReady,
    Unschedulable,
    Taint(&'a Taint),
    NodeAffinity,
    Resources(Shortage),
    PodAffinity,
    PodAntiAffinity,
    ExistingAntiAffinity,
}

/// Which resources were short on a node (NodeResourcesFit reports all of them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shortage {
    pub pods: bool,
    pub cpu: bool,
    pub memory: bool,
    /// Bit i: the pod's i-th scalar request (`PodInfo::request.scalar`) did not fit.
    pub scalars: u64,
}

impl Failure<'_> {
    /// The reasons as kube-scheduler words them, one per short resource.
    pub fn reasons(&self, pod: &PodInfo, out: &mut Vec<String>) {
        let mut push = |s: &str| out.push(s.to_string());
        match self {
            Failure::NotReady => push("node(s) were not ready"),
            Failure::Unschedulable => push("node(s) were unschedulable"),
            Failure::Taint(t) => out.push(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key, t.value
            )),
            Failure::NodeAffinity => push("node(s) didn't match Pod's node affinity/selector"),
            Failure::Resources(s) => {
                if s.pods {
                    push("Too many pods");
                }
                if s.cpu {
                    push("Insufficient cpu");
                }
                if s.memory {
                    push("Insufficient memory");
                }
                for (i, (name, _)) in pod.request.scalar.iter().enumerate().take(64) {
                    if s.scalars & (1 << i) != 0 {
                        out.push(format!("Insufficient {name}"));
                    }
                }
            }
            Failure::PodAffinity => push("node(s) didn't match pod affinity rules"),
            Failure::PodAntiAffinity => push("node(s) didn't match pod anti-affinity rules"),
            Failure::ExistingAntiAffinity => {
                push("node(s) didn't satisfy existing pods anti-affinity rules")
            }
        }
    }
}

impl fmt::Display for Failure<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// One required pod affinity term, resolved: the topology values (of `key`) where a pod
/// it selects runs.
#[derive(Debug)]
struct AffinityTerm<'a> {
    key: &'a str,
    values: HashSet<&'a str>,
}

/// Per-pod state computed once before the nodes are filtered.
#[derive(Debug, Default)]
pub struct PreFilter<'a> {
    affinity: Vec<AffinityTerm<'a>>,
    /// No placed pod matches any affinity term, and the pod matches all of its own terms:
    /// the first of a group that wants to be together may go anywhere the keys exist.
    affinity_self_match: bool,
    /// `(topology key, value)` domains holding a pod the incoming pod's anti-affinity
    /// selects.
    anti: Vec<(&'a str, &'a str)>,
    /// Domains where a placed pod's anti-affinity selects the incoming pod.
    existing_anti: Vec<(&'a str, &'a str)>,
    /// The interned owner of the pod, if any replica of that owner is placed (scores).
    pub owner: Option<OwnerId>,
}

impl<'a> PreFilter<'a> {
    pub fn compute(pod: &'a PodInfo, cache: &'a Cache) -> PreFilter<'a> {
        let mut pre = PreFilter {
            owner: pod.owner.as_deref().and_then(|o| cache.owner_id(o)),
            ..PreFilter::default()
        };
        for (existing, node) in cache.anti_affinity_pods() {
            let Some(data) = &node.data else { continue };
            for term in &existing.required_pod_anti_affinity {
                if term.selects(pod) {
                    if let Some(v) = data.topology_value(&node.name, &term.topology_key) {
                        pre.existing_anti.push((&term.topology_key, v));
                    }
                }
            }
        }
        if pod.required_pod_affinity.is_empty() && pod.required_pod_anti_affinity.is_empty() {
            return pre;
        }
        pre.affinity = pod
            .required_pod_affinity
            .iter()
            .map(|t| AffinityTerm {
                key: &t.topology_key,
                values: HashSet::new(),
            })
            .collect();
        for node in cache.nodes() {
            let Some(data) = &node.data else { continue };
            for placed in &node.pods {
                if placed.uid == pod.uid {
                    continue;
                }
                for (i, term) in pod.required_pod_affinity.iter().enumerate() {
                    if term.selects(placed) {
                        if let Some(v) = data.topology_value(&node.name, &term.topology_key) {
                            pre.affinity[i].values.insert(v);
                        }
                    }
                }
                for term in &pod.required_pod_anti_affinity {
                    if term.selects(placed) {
                        if let Some(v) = data.topology_value(&node.name, &term.topology_key) {
                            pre.anti.push((&term.topology_key, v));
                        }
                    }
                }
            }
        }
        pre.affinity_self_match = pre.affinity.iter().all(|t| t.values.is_empty())
            && pod.required_pod_affinity.iter().all(|t| t.selects(pod));
        pre
    }
}

/// Runs the filters for `pod` on `node` (which must have node data).
pub fn filter<'n>(
    pod: &PodInfo,
    pre: &PreFilter<'_>,
    node: &'n NodeInfo,
) -> Result<(), Failure<'n>> {
    let Some(data) = &node.data else {
        return Err(Failure::NotReady);
    };
    if !data.ready {
        return Err(Failure::NotReady);
    }
    if data.unschedulable && !tolerates_unschedulable(pod) {
        return Err(Failure::Unschedulable);
    }
    if let Some(t) = data
        .taints
        .iter()
        .find(|t| t.blocks() && !tolerated(&pod.tolerations, t))
    {
        return Err(Failure::Taint(t));
    }
    if !node_affinity(pod, &node.name, data) {
        return Err(Failure::NodeAffinity);
    }
    let short = shortage(pod, node, data);
    if short != Shortage::default() {
        return Err(Failure::Resources(short));
    }
    pod_affinity(pre, &node.name, data)
}

/// A cordoned node takes pods that tolerate `node.kubernetes.io/unschedulable:NoSchedule`.
fn tolerates_unschedulable(pod: &PodInfo) -> bool {
    let taint = Taint {
        key: "node.kubernetes.io/unschedulable".to_string(),
        value: String::new(),
        effect: Effect::NoSchedule,
    };
    !pod.tolerations.is_empty() && tolerated(&pod.tolerations, &taint)
}

/// `nodeSelector` and required node affinity.
pub fn node_affinity(pod: &PodInfo, name: &str, data: &NodeData) -> bool {
    pod.node_selector
        .iter()
        .all(|(k, v)| data.labels.get(k) == Some(v))
        && pod
            .required_node_affinity
            .as_ref()
            .is_none_or(|sel| sel.matches(name, &data.labels))
}

/// What the pod's request exceeds on the node (allocatable minus what is placed).
pub fn shortage(pod: &PodInfo, node: &NodeInfo, data: &NodeData) -> Shortage {
    let mut s = Shortage {
        pods: node.pods.len() as i64 + 1 > data.max_pods,
        ..Shortage::default()
    };
    let req = &pod.request;
    s.cpu = req.cpu > 0 && req.cpu > data.allocatable.cpu - node.requested.cpu;
    s.memory = req.memory > 0 && req.memory > data.allocatable.memory - node.requested.memory;
    for (i, (name, v)) in req.scalar.iter().enumerate().take(64) {
        if *v > data.allocatable.scalar(name) - node.requested.scalar(name) {
            s.scalars |= 1 << i;
        }
    }
    s
}

fn pod_affinity<'n>(pre: &PreFilter<'_>, name: &str, data: &NodeData) -> Result<(), Failure<'n>> {
    if !pre.affinity.is_empty() {
        let mut all_keys = true;
        let mut satisfied = true;
        for t in &pre.affinity {
            match data.topology_value(name, t.key) {
                Some(v) => satisfied &= t.values.contains(v),
                None => {
                    all_keys = false;
                    satisfied = false;
                }
            }
        }
        if !(satisfied || pre.affinity_self_match && all_keys) {
            return Err(Failure::PodAffinity);
        }
    }
    let in_domain = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .any(|(k, v)| data.topology_value(name, k) == Some(*v))
    };
    if in_domain(&pre.anti) {
        return Err(Failure::PodAntiAffinity);
    }
    if in_domain(&pre.existing_anti) {
        return Err(Failure::ExistingAntiAffinity);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::scheduler::cache::tests::{node_data, pod};
    use crate::scheduler::pod::tests::pod_from_json;
    use crate::scheduler::pod::Resources;
    use serde_json::json;

    fn one_node(data: NodeData) -> Cache {
        let mut c = Cache::new();
        c.set_node("n1", data);
        c
    }

    fn check(p: &PodInfo, c: &Cache, node: &str) -> Result<(), String> {
        let pre = PreFilter::compute(p, c);
        filter(p, &pre, c.node(node).unwrap()).map_err(|f| {
            let mut v = vec![];
            f.reasons(p, &mut v);
            v.join(", ")
        })
    }

    fn spec_pod(spec: serde_json::Value, labels: serde_json::Value) -> PodInfo {
        PodInfo::from_pod(&pod_from_json(json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "incoming", "labels": labels},
            "spec": spec
        })))
    }

    #[test]
    fn not_ready_and_cordoned_nodes_are_skipped() {
        let mut d = node_data(1000, 1000, 10);
        d.ready = false;
        let p = pod("p", 1, 1, None);
        assert_eq!(
            check(&p, &one_node(d.clone()), "n1").unwrap_err(),
            "node(s) were not ready"
        );
        d.ready = true;
        d.unschedulable = true;
        assert_eq!(
            check(&p, &one_node(d.clone()), "n1").unwrap_err(),
            "node(s) were unschedulable"
        );
        let tolerant = spec_pod(
            json!({"containers": [], "tolerations": [
                {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}),
            json!({}),
        );
        assert!(check(&tolerant, &one_node(d), "n1").is_ok());
    }

    #[test]
    fn taints_block_unless_tolerated_and_prefer_no_schedule_never_blocks() {
        let mut d = node_data(1000, 1000, 10);
        d.taints = vec![
            Taint {
                key: "soft".into(),
                value: "".into(),
                effect: Effect::PreferNoSchedule,
            },
            Taint {
                key: "dedicated".into(),
                value: "gpu".into(),
                effect: Effect::NoSchedule,
            },
        ];
        let c = one_node(d.clone());
        let plain = pod("p", 1, 1, None);
        assert_eq!(
            check(&plain, &c, "n1").unwrap_err(),
            "node(s) had untolerated taint {dedicated: gpu}"
        );
        let tolerant = spec_pod(
            json!({"containers": [], "tolerations": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}),
            json!({}),
        );
        assert!(check(&tolerant, &c, "n1").is_ok());
        d.taints[1].effect = Effect::NoExecute;
        assert!(
            check(&tolerant, &one_node(d.clone()), "n1").is_err(),
            "effect must match"
        );
        d.taints.remove(1);
        assert!(check(&plain, &one_node(d), "n1").is_ok());
    }

    #[test]
    fn node_selector_and_required_affinity() {
        let mut d = node_data(1000, 1000, 10);
        d.labels.insert("disk".into(), "ssd".into());
        d.labels.insert("gen".into(), "5".into());
        let c = one_node(d);
        let sel = spec_pod(
            json!({"containers": [], "nodeSelector": {"disk": "ssd"}}),
            json!({}),
        );
        assert!(check(&sel, &c, "n1").is_ok());
        let sel = spec_pod(
            json!({"containers": [], "nodeSelector": {"disk": "hdd"}}),
            json!({}),
        );
        assert_eq!(
            check(&sel, &c, "n1").unwrap_err(),
            "node(s) didn't match Pod's node affinity/selector"
        );
        let aff = |op: &str, v: &str| {
            spec_pod(
                json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "gen", "operator": op, "values": [v]}]},
                ]}}}}),
                json!({}),
            )
        };
        assert!(check(&aff("Gt", "4"), &c, "n1").is_ok());
        assert!(check(&aff("Lt", "4"), &c, "n1").is_err());
        assert!(check(&aff("In", "5"), &c, "n1").is_ok());
        assert!(check(&aff("NotIn", "5"), &c, "n1").is_err());
        let by_name = spec_pod(
            json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]}}}}),
            json!({}),
        );
        assert!(check(&by_name, &c, "n1").is_err());
    }

    #[test]
    fn resources_count_placed_and_assumed_pods() {
        let mut c = one_node(node_data(1000, 1000, 3));
        c.add_bound(pod("a", 400, 400, None), "n1");
        c.assume(pod("b", 400, 100, None), "n1");
        assert!(
            check(&pod("p", 200, 500, None), &c, "n1").is_ok(),
            "exactly full fits"
        );
        assert_eq!(
            check(&pod("p", 201, 501, None), &c, "n1").unwrap_err(),
            "Insufficient cpu, Insufficient memory"
        );
        c.add_bound(pod("c", 0, 0, None), "n1");
        assert_eq!(
            check(&pod("p", 0, 0, None), &c, "n1").unwrap_err(),
            "Too many pods"
        );
        c.forget("b");
        assert!(
            check(&pod("p", 600, 600, None), &c, "n1").is_ok(),
            "forgotten pod freed its share"
        );
    }

    #[test]
    fn scalar_resources_must_be_allocatable() {
        let mut d = node_data(1000, 1000, 10);
        d.allocatable.scalar = vec![("example.com/gpu".into(), 1)];
        let c = one_node(d);
        let mut p = (*pod("p", 1, 1, None)).clone();
        p.request = Resources {
            cpu: 1,
            memory: 1,
            scalar: vec![("example.com/gpu".into(), 2)],
        };
        assert_eq!(
            check(&p, &c, "n1").unwrap_err(),
            "Insufficient example.com/gpu"
        );
        p.request.scalar[0].1 = 1;
        assert!(check(&p, &c, "n1").is_ok());
    }

    fn labelled(uid: &str, ns: &str, labels: &[(&str, &str)]) -> Arc<PodInfo> {
        let mut p = (*pod(uid, 1, 1, None)).clone();
        p.namespace = Arc::from(ns);
        p.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Arc::new(p)
    }

    fn anti_pod(uid: &str, app: &str) -> Arc<PodInfo> {
        let p = spec_pod(
            json!({"containers": [], "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "kubernetes.io/hostname"}]}}}),
            json!({"app": app}),
        );
        Arc::new(PodInfo {
            uid: Arc::from(uid),
            ..p
        })
    }

    #[test]
    fn anti_affinity_of_the_incoming_pod_on_hostname() {
        let mut c = Cache::new();
        c.set_node("n1", node_data(1000, 1000, 10));
        c.set_node("n2", node_data(1000, 1000, 10));
        c.add_bound(labelled("x", "default", &[("app", "web")]), "n1");
        c.add_bound(labelled("y", "other", &[("app", "web")]), "n2");
        let p = anti_pod("incoming", "web");
        assert_eq!(
            check(&p, &c, "n1").unwrap_err(),
            "node(s) didn't match pod anti-affinity rules"
        );
        assert!(
            check(&p, &c, "n2").is_ok(),
            "a pod in another namespace does not count"
        );
    }

    #[test]
    fn anti_affinity_of_placed_pods_keeps_the_incoming_pod_away() {
        let mut c = Cache::new();
        c.set_node("n1", node_data(1000, 1000, 10));
        c.set_node("n2", node_data(1000, 1000, 10));
        c.add_bound(anti_pod("guard", "db"), "n1");
        let db = labelled("incoming", "default", &[("app", "db")]);
        assert_eq!(
            check(&db, &c, "n1").unwrap_err(),
            "node(s) didn't satisfy existing pods anti-affinity rules"
        );
        assert!(check(&db, &c, "n2").is_ok());
        let web = labelled("incoming", "default", &[("app", "web")]);
        assert!(check(&web, &c, "n1").is_ok());
        c.remove_pod("guard");
        assert!(check(&db, &c, "n1").is_ok(), "gone with the pod");
    }

    #[test]
    fn anti_affinity_on_a_zone_key_covers_the_whole_zone() {
        let mut c = Cache::new();
        for (n, z) in [("n1", "a"), ("n2", "a"), ("n3", "b")] {
            let mut d = node_data(1000, 1000, 10);
            d.labels.insert("zone".into(), z.into());
            c.set_node(n, d);
        }
        c.add_bound(labelled("x", "default", &[("app", "web")]), "n1");
        let p = spec_pod(
            json!({"containers": [], "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}]}}}),
            json!({}),
        );
        assert!(check(&p, &c, "n2").is_err());
        assert!(check(&p, &c, "n3").is_ok());
    }

    #[test]
    fn pod_affinity_follows_matching_pods_or_lets_the_first_one_in() {
        let mut c = Cache::new();
        c.set_node("n1", node_data(1000, 1000, 10));
        c.set_node("n2", node_data(1000, 1000, 10));
        let p = spec_pod(
            json!({"containers": [], "affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "kubernetes.io/hostname"}]}}}),
            json!({"app": "cache"}),
        );
        assert!(
            check(&p, &c, "n1").is_ok() && check(&p, &c, "n2").is_ok(),
            "first of its group"
        );
        let mut other = p.clone();
        other.labels.clear();
        assert_eq!(
            check(&other, &c, "n1").unwrap_err(),
            "node(s) didn't match pod affinity rules"
        );
        c.add_bound(labelled("x", "default", &[("app", "cache")]), "n2");
        assert!(check(&p, &c, "n1").is_err());
        assert!(check(&p, &c, "n2").is_ok());
    }
}
