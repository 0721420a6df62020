//! The scheduler's picture of the cluster: nodes with what is already placed on them,
//! kept up to date incrementally from informer events and from the scheduler's own
//! decisions.
//!
//! # Assumed pods
//!
//! A decision takes effect in the cache at once ("assume"), before the binding is
//! written, so the next decision already sees the node's new load. When the informer
//! later reports the pod bound, the record is confirmed in place — the request is not
//! added twice. If the binding fails the assumption is forgotten. A record is keyed by pod
//! UID, so a pod deleted and re-created under the same name is a different pod.
//!
//! ```text
//!   assume(p, n1) ──► {p: n1, assumed}  ── informer: p bound to n1 ──► {p: n1, confirmed}
//!                          │                                                 │
//!                  bind failed: forget(p)                      informer: p deleted / finished
//!                          ▼                                                 ▼
//!                       (gone)                                            (gone)
//! ```
//!
//! # Ghost nodes
//!
//! Pods can arrive bound to a node the node informer has not delivered yet (or that was
//! deleted). Their requests are kept on a node entry without node data, which the filters
//! skip; when the node appears its load is already right, without rescanning pods.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::node::NodeData;
use super::pod::{PodInfo, Resources};

/// Interned id of an owner UID, so that counting an owner's replicas on a node is a scan
/// of a few integers rather than string hashing.
pub type OwnerId = u32;

/// One node and what is placed on it.
#[derive(Debug)]
pub struct NodeInfo {
    pub name: Arc<str>,
    /// `None`: a ghost entry that only carries pods (see module docs).
    pub data: Option<NodeData>,
    /// Sum of the requests of the pods on the node.
    pub requested: Resources,
    /// Sum of CPU requests with request-less containers counted at the scoring default.
    pub non_zero_cpu: i64,
    /// Memory counterpart of `non_zero_cpu`.
    pub non_zero_memory: i64,
    /// The pods, assumed or confirmed.
    pub pods: Vec<Arc<PodInfo>>,
    /// Replicas per owner on this node; a handful of entries.
    owners: Vec<(OwnerId, u32)>,
}

impl NodeInfo {
    fn new(name: Arc<str>) -> NodeInfo {
        NodeInfo {
            name,
            data: None,
            requested: Resources::default(),
            non_zero_cpu: 0,
            non_zero_memory: 0,
            pods: Vec::new(),
            owners: Vec::new(),
        }
    }

    /// How many pods of `owner` are on this node.
    pub fn owner_count(&self, owner: OwnerId) -> u32 {
        self.owners
            .iter()
            .find(|(o, _)| *o == owner)
            .map_or(0, |(_, n)| *n)
    }
}

#[derive(Debug)]
struct PodRecord {
    pod: Arc<PodInfo>,
    node: Arc<str>,
    assumed: bool,
}

/// Nodes and the pods that occupy them. One writer (whoever holds the scheduler's lock).
#[derive(Debug, Default)]
pub struct Cache {
    nodes: Vec<NodeInfo>,
    index: HashMap<Arc<str>, usize>,
    pods: HashMap<Arc<str>, PodRecord>,
    owners: HashMap<Arc<str>, (OwnerId, u32)>,
    free_owner_ids: Vec<OwnerId>,
    next_owner_id: OwnerId,
    /// UIDs of placed pods with required anti-affinity terms, which every incoming pod
    /// must be checked against (kube-scheduler's "existing pods' anti-affinity").
    anti_affinity: HashSet<Arc<str>>,
}

impl Cache {
    pub fn new() -> Cache {
        Cache::default()
    }

    /// All node entries, ghosts included (check `data`).
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }

    /// Number of real (non-ghost) nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.iter().filter(|n| n.data.is_some()).count()
    }

    /// Adds or updates a node. Returns whether its scheduling view changed.
    pub fn set_node(&mut self, name: &str, data: NodeData) -> bool {
        let i = self.entry(name);
        let node = &mut self.nodes[i];
        if node.data.as_ref() == Some(&data) {
            return false;
        }
        node.data = Some(data);
        true
    }

    /// Removes a node; its pods stay accounted on a ghost entry until they go.
    pub fn remove_node(&mut self, name: &str) {
        if let Some(&i) = self.index.get(name) {
            self.nodes[i].data = None;
            self.drop_if_empty_ghost(i);
        }
    }

    /// Names of real nodes (for reconciling after a relist).
    pub fn node_names(&self) -> Vec<Arc<str>> {
        self.nodes
            .iter()
            .filter(|n| n.data.is_some())
            .map(|n| n.name.clone())
            .collect()
    }

    /// UIDs of all placed pods, assumed or confirmed.
    pub fn pod_uids(&self) -> Vec<Arc<str>> {
        self.pods.keys().cloned().collect()
    }

    /// Whether the pod is placed (assumed or confirmed).
    pub fn contains_pod(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    /// Whether the pod is placed by this scheduler and not yet confirmed by the informer.
    pub fn is_assumed(&self, uid: &str) -> bool {
        self.pods.get(uid).is_some_and(|r| r.assumed)
    }

    /// The node a placed pod is on.
    pub fn pod_node(&self, uid: &str) -> Option<&Arc<str>> {
        self.pods.get(uid).map(|r| &r.node)
    }

    /// The interned id of an owner UID, if any pod of that owner is placed.
    pub fn owner_id(&self, owner: &str) -> Option<OwnerId> {
        self.owners.get(owner).map(|(id, _)| *id)
    }

    /// Placed pods with required anti-affinity, with the node each is on.
    pub fn anti_affinity_pods(&self) -> impl Iterator<Item = (&PodInfo, &NodeInfo)> {
        self.anti_affinity.iter().filter_map(|uid| {
            let r = self.pods.get(uid)?;
            let node = self.node(&r.node)?;
            Some((&*r.pod, node))
        })
    }

    /// Places `pod` on `node` ahead of its binding. Replaces any earlier record of the pod.
    pub fn assume(&mut self, pod: Arc<PodInfo>, node: &str) {
        self.place(pod, node, true);
    }

    /// Records `pod` as bound to `node`, as the informer reports it: confirms an
    /// assumption (same node or not) or adds the pod; an update replaces the old record.
    pub fn add_bound(&mut self, pod: Arc<PodInfo>, node: &str) {
        self.place(pod, node, false);
    }

    /// Undoes an assumption whose binding failed. A record the informer has confirmed
    /// meanwhile is kept (the binding did happen). Returns whether anything was removed.
    pub fn forget(&mut self, uid: &str) -> bool {
        if self.is_assumed(uid) {
            self.remove_pod(uid)
        } else {
            false
        }
    }

    /// Removes a pod that was deleted or finished. Returns whether it was placed.
    pub fn remove_pod(&mut self, uid: &str) -> bool {
        let Some(rec) = self.pods.remove(uid) else {
            return false;
        };
        self.anti_affinity.remove(uid);
        let Some(&i) = self.index.get(&*rec.node) else {
            panic!("pod {uid} recorded on node {} that has no entry", rec.node);
        };
        let owner = rec.pod.owner.as_ref().map(|o| self.release_owner(o));
        let node = &mut self.nodes[i];
        node.requested.sub(&rec.pod.request);
        node.non_zero_cpu -= rec.pod.non_zero.cpu;
        node.non_zero_memory -= rec.pod.non_zero.memory;
        if let Some(p) = node.pods.iter().position(|p| p.uid == rec.pod.uid) {
            node.pods.swap_remove(p);
        }
        if let Some(id) = owner {
            if let Some(p) = node.owners.iter().position(|(o, _)| *o == id) {
                node.owners[p].1 -= 1;
                if node.owners[p].1 == 0 {
                    node.owners.swap_remove(p);
                }
            }
        }
        self.drop_if_empty_ghost(i);
        true
    }

    fn place(&mut self, pod: Arc<PodInfo>, node: &str, assumed: bool) {
        self.remove_pod(&pod.uid);
        let owner = pod.owner.as_ref().map(|o| self.intern_owner(o));
        let i = self.entry(node);
        let n = &mut self.nodes[i];
        n.requested.add(&pod.request);
        n.non_zero_cpu += pod.non_zero.cpu;
        n.non_zero_memory += pod.non_zero.memory;
        n.pods.push(pod.clone());
        if let Some(id) = owner {
            match n.owners.iter_mut().find(|(o, _)| *o == id) {
                Some(e) => e.1 += 1,
                None => n.owners.push((id, 1)),
            }
        }
        if !pod.required_pod_anti_affinity.is_empty() {
            self.anti_affinity.insert(pod.uid.clone());
        }
        let name = self.nodes[i].name.clone();
        self.pods.insert(
            pod.uid.clone(),
            PodRecord {
                pod,
                node: name,
                assumed,
            },
        );
    }

    fn entry(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let name: Arc<str> = Arc::from(name);
        self.nodes.push(NodeInfo::new(name.clone()));
        self.index.insert(name, self.nodes.len() - 1);
        self.nodes.len() - 1
    }

    fn drop_if_empty_ghost(&mut self, i: usize) {
        if self.nodes[i].data.is_some() || !self.nodes[i].pods.is_empty() {
            return;
        }
        let gone = self.nodes.swap_remove(i);
        self.index.remove(&gone.name);
        if i < self.nodes.len() {
            let moved = self.nodes[i].name.clone();
            self.index.insert(moved, i);
        }
    }

    fn intern_owner(&mut self, owner: &Arc<str>) -> OwnerId {
        if let Some(e) = self.owners.get_mut(owner) {
            e.1 += 1;
            return e.0;
        }
        let id = self.free_owner_ids.pop().unwrap_or_else(|| {
            self.next_owner_id += 1;
            self.next_owner_id - 1
        });
        self.owners.insert(owner.clone(), (id, 1));
        id
    }

    fn release_owner(&mut self, owner: &str) -> OwnerId {
        let Some(e) = self.owners.get_mut(owner) else {
            panic!("owner {owner} of a placed pod was not interned");
        };
        let id = e.0;
        e.1 -= 1;
        if e.1 == 0 {
            self.owners.remove(owner);
            self.free_owner_ids.push(id);
        }
        id
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn node_data(cpu: i64, memory: i64, pods: i64) -> NodeData {
        NodeData {
            allocatable: Resources {
                cpu,
                memory,
                scalar: vec![],
            },
            max_pods: pods,
            ready: true,
            ..NodeData::default()
        }
    }

    pub fn pod(uid: &str, cpu: i64, memory: i64, owner: Option<&str>) -> Arc<PodInfo> {
        let r = Resources {
            cpu,
            memory,
            scalar: vec![],
        };
        Arc::new(PodInfo {
            uid: Arc::from(uid),
            namespace: Arc::from("default"),
            name: Arc::from(uid),
            labels: Default::default(),
            priority: 0,
            request: r.clone(),
            non_zero: r,
            node_selector: Default::default(),
            required_node_affinity: None,
            preferred_node_affinity: vec![],
            tolerations: vec![],
            required_pod_affinity: vec![],
            required_pod_anti_affinity: vec![],
            owner: owner.map(Arc::from),
        })
    }

    #[test]
    fn assume_then_confirm_counts_once() {
        let mut c = Cache::new();
        c.set_node("n1", node_data(4000, 1 << 30, 10));
        c.assume(pod("p1", 500, 100, Some("rs")), "n1");
        assert!(c.is_assumed("p1"));
        c.add_bound(pod("p1", 500, 100, Some("rs")), "n1");
        assert!(!c.is_assumed("p1") && c.contains_pod("p1"));
        let n = c.node("n1").unwrap();
        assert_eq!(
            (n.requested.cpu, n.requested.memory, n.pods.len()),
            (500, 100, 1)
        );
        assert_eq!(n.owner_count(c.owner_id("rs").unwrap()), 1);
        // Status updates of the bound pod replace, not add.
        c.add_bound(pod("p1", 500, 100, Some("rs")), "n1");
        assert_eq!(c.node("n1").unwrap().requested.cpu, 500);
        // A failed bind reported after the informer confirmed the pod changes nothing.
        assert!(!c.forget("p1"));
        assert_eq!(c.node("n1").unwrap().pods.len(), 1);
    }

    #[test]
    fn forget_undoes_an_assumption_exactly() {
        let mut c = Cache::new();
        c.set_node("n1", node_data(4000, 1 << 30, 10));
        c.add_bound(pod("a", 100, 10, Some("rs")), "n1");
        c.assume(pod("b", 300, 30, Some("rs")), "n1");
        assert_eq!(c.node("n1").unwrap().requested.cpu, 400);
        assert!(c.forget("b"));
        let n = c.node("n1").unwrap();
        assert_eq!(
            (n.requested.cpu, n.requested.memory, n.pods.len()),
            (100, 10, 1)
        );
        assert_eq!(n.owner_count(c.owner_id("rs").unwrap()), 1);
        assert!(!c.contains_pod("b"));
    }

    #[test]
    fn confirmation_on_another_node_moves_the_pod() {
        let mut c = Cache::new();
        c.set_node("n1", node_data(4000, 1 << 30, 10));
        c.set_node("n2", node_data(4000, 1 << 30, 10));
        c.assume(pod("p", 700, 0, None), "n1");
        c.add_bound(pod("p", 700, 0, None), "n2");
        assert_eq!(c.node("n1").unwrap().requested.cpu, 0);
        assert_eq!(c.node("n2").unwrap().requested.cpu, 700);
        assert_eq!(c.pod_node("p").map(|n| &**n), Some("n2"));
    }

    #[test]
    fn ghost_nodes_keep_load_until_the_node_arrives() {
        let mut c = Cache::new();
        c.add_bound(pod("p", 250, 0, Some("o")), "late");
        assert_eq!(c.node_count(), 0);
        assert!(c.node("late").unwrap().data.is_none());
        assert!(c.set_node("late", node_data(1000, 1000, 5)));
        assert!(
            !c.set_node("late", node_data(1000, 1000, 5)),
            "unchanged view"
        );
        assert_eq!(c.node("late").unwrap().requested.cpu, 250);
        c.remove_node("late");
        assert!(c.node("late").is_some(), "still carries a pod");
        c.remove_pod("p");
        assert!(c.node("late").is_none(), "empty ghost dropped");
        assert_eq!(c.owner_id("o"), None, "owner released");
    }

    #[test]
    fn node_removal_keeps_the_index_consistent() {
        let mut c = Cache::new();
        for i in 0..5 {
            c.set_node(&format!("n{i}"), node_data(1000, 1000, 5));
        }
        c.remove_node("n1");
        c.remove_node("n0");
        let mut names: Vec<String> = c.node_names().iter().map(|n| n.to_string()).collect();
        names.sort();
        assert_eq!(names, ["n2", "n3", "n4"]);
        for n in ["n2", "n3", "n4"] {
            assert_eq!(&*c.node(n).unwrap().name, n);
        }
    }

    #[test]
    fn owner_ids_are_recycled() {
        let mut c = Cache::new();
        c.set_node("n", node_data(1000, 1000, 5));
        c.add_bound(pod("a", 1, 1, Some("o1")), "n");
        let id = c.owner_id("o1").unwrap();
        c.remove_pod("a");
        c.add_bound(pod("b", 1, 1, Some("o2")), "n");
        assert_eq!(c.owner_id("o2"), Some(id));
        assert_eq!(c.node("n").unwrap().owner_count(id), 1);
    }
}
