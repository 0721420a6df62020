//! What the scheduler keeps of a node: the inputs of the filters and scores.

use k8s_openapi::api::core::v1 as core;

use super::pod::Resources;
use super::quantity::Quantity;
use super::selector::Labels;
use super::taint::Taint;

/// The hostname label; a node without it is its own topology domain for this key.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// The scheduling-relevant view of a node. Equal views schedule identically, so an update
/// that leaves the view unchanged (a heartbeat) need not retry unschedulable pods.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeData {
    pub labels: Labels,
    pub taints: Vec<Taint>,
    /// `status.allocatable` (or `capacity` when allocatable is absent).
    pub allocatable: Resources,
    /// How many pods the node takes.
    pub max_pods: i64,
    /// Condition `Ready` is `True`.
    pub ready: bool,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
}

impl NodeData {
    pub fn from_node(node: &core::Node) -> NodeData {
        let status = node.status.as_ref();
        let list = status
            .and_then(|s| s.allocatable.as_ref())
            .filter(|a| !a.is_empty())
            .or_else(|| status.and_then(|s| s.capacity.as_ref()));
        let max_pods = list
            .and_then(|l| l.get("pods"))
            .and_then(|q| q.0.parse::<Quantity>().ok())
            .map(|q| q.value())
            .unwrap_or(0);
        let spec = node.spec.as_ref();
        NodeData {
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec
                .and_then(|s| s.taints.as_ref())
                .into_iter()
                .flatten()
                .map(Taint::from_api)
                .collect(),
            allocatable: Resources::from_list(list),
            max_pods,
            ready: status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|c| c.status == "True"),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
        }
    }

    /// The node's value for a topology key; the hostname key falls back to the node's
    /// name (nodes registered without the label still are one host each).
    pub fn topology_value<'a>(&'a self, name: &'a str, key: &str) -> Option<&'a str> {
        match self.labels.get(key) {
            Some(v) => Some(v.as_str()),
            None if key == HOSTNAME_LABEL => Some(name),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_allocatable_conditions_and_taints() {
        let node: core::Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": {"zone": "a"}},
            "spec": {"unschedulable": true, "taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {
                "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
                "allocatable": {"cpu": "7500m", "memory": "15Gi", "pods": "100", "example.com/dev": "3"},
                "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}]
            }
        }))
        .unwrap();
        let d = NodeData::from_node(&node);
        assert_eq!(d.allocatable.cpu, 7500);
        assert_eq!(d.allocatable.memory, 15 << 30);
        assert_eq!(d.allocatable.scalar("example.com/dev"), 3);
        assert_eq!(d.max_pods, 100);
        assert!(d.ready && d.unschedulable);
        assert_eq!(d.taints.len(), 1);
        assert_eq!(d.topology_value("n1", "zone"), Some("a"));
        assert_eq!(d.topology_value("n1", HOSTNAME_LABEL), Some("n1"));
        assert_eq!(d.topology_value("n1", "rack"), None);
    }

    #[test]
    fn missing_ready_condition_is_not_ready_and_capacity_is_the_fallback() {
        let node: core::Node = serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "status": {"capacity": {"cpu": "2", "pods": "10"},
                       "conditions": [{"type": "Ready", "status": "Unknown"}]}
        }))
        .unwrap();
        let d = NodeData::from_node(&node);
        assert!(!d.ready);
        assert_eq!((d.allocatable.cpu, d.max_pods), (2000, 10));
    }
}
