//! The owner → dependents graph, by uid, built from watch events of every watched kind.
//!
//! ```text
//!   Deployment web (uid d1)          nodes: uid → Node (identity, ownerReferences,
//!        ▲ ownerRef {uid d1, block}         deletionTimestamp, GC finalizers)
//!   ReplicaSet web-5f (uid r1)       dependents: owner uid → dependent uids, kept also
//!        ▲ ownerRef {uid r1, block}         for owners not (or no longer) observed, so
//!   Pod web-5f-x (uid p1)                   their dependents can be found when checking
//! ```
//!
//! Applying an event returns the [`Work`] it calls for, the way Kubernetes's graph builder
//! feeds its attemptToDelete / attemptToOrphan queues:
//! - a dependent with an owner that is not in the graph (or is there under another name or
//!   namespace), or whose owner waits for its dependents (foreground): check it;
//! - an object that enters foreground deletion: check it and each of its dependents;
//! - an object with the `orphan` finalizer being deleted: orphan its dependents;
//! - an object that disappears: check its dependents, and its owners that wait for it.
//!
//! The graph is plain data: no I/O, no recursion (so ownership cycles cannot hang it).

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::resources::Kind;

/// An object's uid.
pub type Uid = String;

/// The finalizer of foreground deletion: the object goes after its blocking dependents.
pub const FINALIZER_FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of orphaning deletion: dependents lose their reference first.
pub const FINALIZER_ORPHAN: &str = "orphan";

/// Which object: kind, namespace (None for cluster-scoped kinds), name and uid.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub kind: &'static Kind,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: Uid,
}

/// What the collector keeps of an object.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub id: Identity,
    pub owners: Vec<OwnerReference>,
    /// It has a deletionTimestamp.
    pub deleting: bool,
    /// It has the `foregroundDeletion` finalizer.
    pub foreground: bool,
    /// It has the `orphan` finalizer.
    pub orphan: bool,
}

impl Node {
    /// The node for an object's metadata; `None` without a uid or name.
    pub fn from_meta(kind: &'static Kind, meta: &ObjectMeta) -> Option<Node> {
        let fins = meta.finalizers.as_deref().unwrap_or_default();
        Some(Node {
            id: Identity {
                kind,
                namespace: meta.namespace.clone().filter(|_| kind.namespaced),
                name: meta.name.clone()?,
                uid: meta.uid.clone()?,
            },
            owners: meta.owner_references.clone().unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
            foreground: fins.iter().any(|f| f == FINALIZER_FOREGROUND),
            orphan: fins.iter().any(|f| f == FINALIZER_ORPHAN),
        })
    }

    /// Being deleted in the foreground: waits for its blocking dependents.
    pub fn deleting_dependents(&self) -> bool {
        self.deleting && self.foreground
    }

    /// Being deleted with orphaning: its dependents must lose their references first.
    pub fn orphaning(&self) -> bool {
        self.deleting && self.orphan
    }

    /// Its reference to `owner`, if any.
    pub fn owner_ref(&self, owner: &str) -> Option<&OwnerReference> {
        self.owners.iter().find(|r| r.uid == owner)
    }
}

/// Work the collector queues, by uid.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Work {
    /// Check the object: collect it if its owners are gone, drop references to absent
    /// owners, or — if it is itself deleting in the foreground — finish that when its
    /// blocking dependents are gone.
    Delete(Uid),
    /// Orphan the dependents of the object, then drop its `orphan` finalizer.
    Orphan(Uid),
}

/// The graph; see the module doc.
#[derive(Default, Debug)]
pub struct Graph {
    nodes: HashMap<Uid, Node>,
    /// owner uid → uids of the nodes referencing it.
    dependents: HashMap<Uid, BTreeSet<Uid>>,
}

impl Graph {
    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The observed nodes that reference `owner`.
    pub fn dependents(&self, owner: &str) -> Vec<&Node> {
        self.dependents
            .get(owner)
            .into_iter()
            .flatten()
            .filter_map(|d| self.nodes.get(d))
            .collect()
    }

    /// Dependents of `owner` whose reference to it has `blockOwnerDeletion: true`: the ones
    /// a foreground deletion of `owner` waits for.
    pub fn blocking_dependents(&self, owner: &str) -> Vec<&Node> {
        self.dependents(owner)
            .into_iter()
            .filter(|d| {
                d.owner_ref(owner)
                    .is_some_and(|r| r.block_owner_deletion == Some(true))
            })
            .collect()
    }

    /// The uids of the nodes of one kind (to find the ones a relist no longer has).
    pub fn uids_of(&self, kind: &Kind) -> Vec<Uid> {
        self.nodes
            .values()
            .filter(|n| n.id.kind == kind)
            .map(|n| n.id.uid.clone())
            .collect()
    }

    /// Whether `dep` must be checked because of its owners as the graph sees them.
    fn suspicious_owners(&self, dep: &Node) -> bool {
        dep.owners.iter().any(|r| match self.nodes.get(&r.uid) {
            None => true,
            Some(o) => {
                o.deleting_dependents()
                    || o.id.name != r.name
                    || (o.id.kind.namespaced && o.id.namespace != dep.id.namespace)
            }
        })
    }

    /// Adds or updates a node; returns the work the change calls for.
    pub fn upsert(&mut self, node: Node) -> Vec<Work> {
        let uid = node.id.uid.clone();
        let old = self.nodes.insert(uid.clone(), node.clone());
        let mut work = Vec::new();

        // Edges; owners whose reference went away or changed may stop waiting.
        let old_refs: &[OwnerReference] = old.as_ref().map_or(&[], |o| &o.owners);
        for r in old_refs {
            if node.owner_ref(&r.uid) != Some(r) {
                if node.owner_ref(&r.uid).is_none() {
                    if let Some(set) = self.dependents.get_mut(&r.uid) {
                        set.remove(&uid);
                        if set.is_empty() {
                            self.dependents.remove(&r.uid);
                        }
                    }
                }
                if self
                    .nodes
                    .get(&r.uid)
                    .is_some_and(Node::deleting_dependents)
                {
                    work.push(Work::Delete(r.uid.clone()));
                }
            }
        }
        for r in &node.owners {
            self.dependents
                .entry(r.uid.clone())
                .or_default()
                .insert(uid.clone());
        }

        // As a dependent.
        if self.suspicious_owners(&node) {
            work.push(Work::Delete(uid.clone()));
        }
        // As an owner.
        if node.deleting_dependents() {
            work.push(Work::Delete(uid.clone()));
            if !old.as_ref().is_some_and(Node::deleting_dependents) {
                for d in self.dependents(&uid) {
                    work.push(Work::Delete(d.id.uid.clone()));
                }
            }
        }
        if node.orphaning() {
            work.push(Work::Orphan(uid));
        }
        work.sort();
        work.dedup();
        work
    }

    /// Removes a node (its object is gone); returns the work that calls for.
    pub fn remove(&mut self, uid: &str) -> Vec<Work> {
        let Some(node) = self.nodes.remove(uid) else {
            return Vec::new();
        };
        let mut work: Vec<Work> = self
            .dependents(uid)
            .into_iter()
            .map(|d| Work::Delete(d.id.uid.clone()))
            .collect();
        for r in &node.owners {
            if let Some(set) = self.dependents.get_mut(&r.uid) {
                set.remove(uid);
                if set.is_empty() {
                    self.dependents.remove(&r.uid);
                }
            }
            if self
                .nodes
                .get(&r.uid)
                .is_some_and(Node::deleting_dependents)
            {
                work.push(Work::Delete(r.uid.clone()));
            }
        }
        work.sort();
        work.dedup();
        work
    }

    /// All the work the graph as a whole calls for (after the initial lists, when the
    /// events that built it were not acted on one by one).
    pub fn pending_work(&self) -> Vec<Work> {
        let mut work = Vec::new();
        for n in self.nodes.values() {
            if n.deleting_dependents() || self.suspicious_owners(n) {
                work.push(Work::Delete(n.id.uid.clone()));
            }
            if n.orphaning() {
                work.push(Work::Orphan(n.id.uid.clone()));
            }
        }
        work.sort();
        work
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gc::resources::lookup;

    pub fn owner_ref(kind: &Kind, name: &str, uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: kind.api_version(),
            kind: kind.kind.into(),
            name: name.into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(block),
        }
    }

    pub fn node(kind: &'static Kind, name: &str, uid: &str, owners: Vec<OwnerReference>) -> Node {
        Node {
            id: Identity {
                kind,
                namespace: kind.namespaced.then(|| "default".to_string()),
                name: name.into(),
                uid: uid.into(),
            },
            owners,
            deleting: false,
            foreground: false,
            orphan: false,
        }
    }

    #[test]
    fn edges_and_work() {
        let rs = lookup("apps/v1", "ReplicaSet").unwrap();
        let pod = lookup("v1", "Pod").unwrap();
        let mut g = Graph::default();
        // A pod whose owner is not observed yet: check it.
        let p = node(pod, "p", "p1", vec![owner_ref(rs, "rs", "r1", true)]);
        assert_eq!(g.upsert(p.clone()), vec![Work::Delete("p1".into())]);
        // Owner arrives: nothing to do, and the pod is its blocking dependent.
        assert!(g.upsert(node(rs, "rs", "r1", vec![])).is_empty());
        assert_eq!(g.blocking_dependents("r1").len(), 1);
        assert!(g.upsert(p.clone()).is_empty());
        // The owner enters foreground deletion: check it and its dependent.
        let mut fg = node(rs, "rs", "r1", vec![]);
        fg.deleting = true;
        fg.foreground = true;
        assert_eq!(
            g.upsert(fg.clone()),
            vec![Work::Delete("p1".into()), Work::Delete("r1".into())]
        );
        // Still foreground on a later update: only itself.
        assert_eq!(g.upsert(fg), vec![Work::Delete("r1".into())]);
        // The pod goes: its waiting owner is checked.
        assert_eq!(g.remove("p1"), vec![Work::Delete("r1".into())]);
        assert!(g.dependents("r1").is_empty());
        // The owner goes with no dependents left.
        assert!(g.remove("r1").is_empty());
        assert!(g.is_empty());
    }

    #[test]
    fn owner_removal_checks_dependents_and_pending_work_sees_them() {
        let rs = lookup("apps/v1", "ReplicaSet").unwrap();
        let pod = lookup("v1", "Pod").unwrap();
        let mut g = Graph::default();
        g.upsert(node(rs, "rs", "r1", vec![]));
        g.upsert(node(pod, "a", "p1", vec![owner_ref(rs, "rs", "r1", true)]));
        g.upsert(node(pod, "b", "p2", vec![owner_ref(rs, "rs", "r1", false)]));
        assert!(g.pending_work().is_empty());
        assert_eq!(
            g.remove("r1"),
            vec![Work::Delete("p1".into()), Work::Delete("p2".into())]
        );
        assert_eq!(
            g.pending_work(),
            vec![Work::Delete("p1".into()), Work::Delete("p2".into())]
        );
        // Same uid under another name is suspicious too.
        g.upsert(node(rs, "other", "r1", vec![]));
        assert_eq!(g.pending_work().len(), 2);
    }

    #[test]
    fn dropping_a_blocking_reference_wakes_the_waiting_owner() {
        let rs = lookup("apps/v1", "ReplicaSet").unwrap();
        let pod = lookup("v1", "Pod").unwrap();
        let mut g = Graph::default();
        let mut owner = node(rs, "rs", "r1", vec![]);
        owner.deleting = true;
        owner.foreground = true;
        g.upsert(owner);
        g.upsert(node(pod, "a", "p1", vec![owner_ref(rs, "rs", "r1", true)]));
        let work = g.upsert(node(pod, "a", "p1", vec![owner_ref(rs, "rs", "r1", false)]));
        assert!(work.contains(&Work::Delete("r1".into())));
        assert!(g.blocking_dependents("r1").is_empty());
        let work = g.upsert(node(pod, "a", "p1", vec![]));
        assert_eq!(work, vec![Work::Delete("r1".into())]);
        assert!(g.dependents("r1").is_empty());
    }
}
