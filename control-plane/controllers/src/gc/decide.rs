//! What the collector does with one piece of [`Work`]: decisions as pure functions, and the
//! one procedure ([`process`]) that feeds them live reads and carries them out through a
//! [`Cluster`] — the API server in production, an in-memory model in the tests below,
//! which run whole deletions (background, foreground chains, orphaning, cycles) to the end.
//!
//! The rules are Kubernetes's (pkg/controller/garbagecollector, attemptToDeleteItem):
//! - Each owner reference of a dependent is *solid* (the owner exists with that uid),
//!   *dangling* (no object of that name, or one with another uid — a namespaced owner is
//!   looked for in the dependent's namespace) or *waiting* (the owner exists and is being
//!   deleted in the foreground). A reference that cannot be resolved counts as solid:
//!   nothing is deleted on a guess.
//! - Some solid owner: keep the dependent, but drop its dangling and waiting references.
//! - No solid owner, some waiting owner, and dependents of its own: delete it in the
//!   foreground too (so the chain waits for the grandchildren) — first making its own
//!   references non-blocking if one of its dependents is already deleting in the
//!   foreground, which breaks ownership cycles.
//! - Otherwise: delete it (Background, or the propagation its finalizers ask for).
//! - An owner deleting in the foreground loses the `foregroundDeletion` finalizer once no
//!   dependent blocks it (`blockOwnerDeletion: true`); until then its dependents are
//!   deleted.
//! - An owner with the `orphan` finalizer: its dependents lose their reference to it,
//!   then it loses the finalizer.

use std::collections::HashSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use parking_lot::Mutex;

use super::graph::{Graph, Identity, Node, Uid, Work, FINALIZER_FOREGROUND, FINALIZER_ORPHAN};
use super::resources::{lookup, Kind};

/// Absent owners remembered; the set is cleared when it grows past this.
const MAX_ABSENT: usize = 10_000;

/// A deletion's propagation policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Background,
    Foreground,
    Orphan,
}

/// What a live read says of one owner reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerState {
    /// No object of that kind and name, or one with another uid.
    Absent,
    /// The owner exists; `waiting`: it is deleting in the foreground.
    Present { waiting: bool },
    /// The reference names a kind the collector does not know, or a namespaced owner of a
    /// cluster-scoped object.
    Unresolvable,
}

/// What to do with a dependent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DependentAction {
    Keep,
    /// Drop the references to these owner uids.
    RemoveOwners(Vec<Uid>),
    Delete(Policy),
    /// Make every reference non-blocking, then delete in the foreground (cycle breaking).
    UnblockThenDeleteForeground,
}

/// Where to look for the owner `r` of `dep`: its kind and namespace, or `None` when the
/// reference cannot be resolved.
pub fn owner_location(
    dep: &Identity,
    r: &OwnerReference,
) -> Option<(&'static Kind, Option<String>)> {
    let kind = lookup(&r.api_version, &r.kind)?;
    if !kind.namespaced {
        return Some((kind, None));
    }
    // A namespaced owner can only own objects of its own namespace.
    dep.namespace.clone().map(|ns| (kind, Some(ns)))
}

/// The state of reference `r` given the live object found by its name (`None`: not found).
pub fn owner_state(r: &OwnerReference, live: Option<&Node>) -> OwnerState {
    match live {
        Some(o) if o.id.uid == r.uid => OwnerState::Present {
            waiting: o.deleting_dependents(),
        },
        _ => OwnerState::Absent,
    }
}

/// The decision for a dependent that is not itself being deleted, from the live states of
/// its references and what the graph knows of its own dependents.
pub fn decide_dependent(
    item: &Node,
    owners: &[(OwnerReference, OwnerState)],
    has_dependents: bool,
    a_dependent_deletes_dependents: bool,
) -> DependentAction {
    if item.deleting || owners.is_empty() {
        return DependentAction::Keep;
    }
    let solid = owners.iter().any(|(_, s)| {
        matches!(
            s,
            OwnerState::Present { waiting: false } | OwnerState::Unresolvable
        )
    });
    let waiting = owners
        .iter()
        .any(|(_, s)| *s == OwnerState::Present { waiting: true });
    if solid {
        let drop: Vec<Uid> = owners
            .iter()
            .filter(|(_, s)| {
                matches!(
                    s,
                    OwnerState::Absent | OwnerState::Present { waiting: true }
                )
            })
            .map(|(r, _)| r.uid.clone())
            .collect();
        return if drop.is_empty() {
            DependentAction::Keep
        } else {
            DependentAction::RemoveOwners(drop)
        };
    }
    if waiting && has_dependents {
        return if a_dependent_deletes_dependents {
            DependentAction::UnblockThenDeleteForeground
        } else {
            DependentAction::Delete(Policy::Foreground)
        };
    }
    DependentAction::Delete(if item.orphan {
        Policy::Orphan
    } else if item.foreground {
        Policy::Foreground
    } else {
        Policy::Background
    })
}

/// The API operations the collector needs. Implementations verify that the object they
/// change still has the identity's uid and make their read-modify-writes conditional
/// (resourceVersion), retrying conflicts; an object already gone is success.
#[allow(async_fn_in_trait)]
pub trait Cluster {
    type Error: std::fmt::Display;
    /// The object of that kind, namespace and name, as a node (`None`: not found).
    async fn get(
        &self,
        kind: &'static Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Node>, Self::Error>;
    /// DELETE with a uid precondition and the given propagation policy.
    async fn delete(&self, id: &Identity, policy: Policy) -> Result<(), Self::Error>;
    /// Drops the owner references to `owners`.
    async fn remove_owners(&self, id: &Identity, owners: &[Uid]) -> Result<(), Self::Error>;
    /// Sets `blockOwnerDeletion: false` on every owner reference.
    async fn unblock_owners(&self, id: &Identity) -> Result<(), Self::Error>;
    /// Drops one finalizer.
    async fn remove_finalizer(&self, id: &Identity, finalizer: &str) -> Result<(), Self::Error>;
}

/// Owner uids verified absent. A uid never comes back, so a remembered absence stays true;
/// it saves a GET per dependent when an owner of many is gone.
#[derive(Default)]
pub struct Absent(Mutex<HashSet<Uid>>);

impl Absent {
    fn contains(&self, uid: &str) -> bool {
        self.0.lock().contains(uid)
    }

    fn insert(&self, uid: &str) {
        let mut s = self.0.lock();
        if s.len() >= MAX_ABSENT {
            s.clear();
        }
        s.insert(uid.to_string());
    }
}

/// Processes one piece of work; returns further work to queue. Errors leave the work to
/// be retried (the caller requeues it).
pub async fn process<C: Cluster>(
    cluster: &C,
    graph: &Mutex<Graph>,
    absent: &Absent,
    work: &Work,
) -> Result<Vec<Work>, C::Error> {
    let (Work::Delete(uid) | Work::Orphan(uid)) = work;
    let Some(id) = graph.lock().get(uid).map(|n| n.id.clone()) else {
        return Ok(Vec::new()); // gone meanwhile
    };
    let latest = cluster
        .get(id.kind, id.namespace.as_deref(), &id.name)
        .await?
        .filter(|n| n.id.uid == id.uid);
    let Some(latest) = latest else {
        return Ok(Vec::new()); // gone, or replaced by another object of the same name
    };
    match work {
        Work::Orphan(_) => {
            if !latest.orphaning() {
                return Ok(Vec::new());
            }
            let dependents: Vec<Identity> = graph
                .lock()
                .dependents(uid)
                .into_iter()
                .map(|d| d.id.clone())
                .collect();
            for d in &dependents {
                cluster.remove_owners(d, std::slice::from_ref(uid)).await?;
            }
            cluster.remove_finalizer(&id, FINALIZER_ORPHAN).await?;
            Ok(Vec::new())
        }
        Work::Delete(_) if latest.deleting_dependents() => {
            let follow = {
                let g = graph.lock();
                if g.blocking_dependents(uid).is_empty() {
                    None
                } else {
                    Some(
                        g.dependents(uid)
                            .into_iter()
                            // Not the ones deleting already: they finish (or wait
                            // for their own dependents) without help, and requeueing
                            // a foreground-deleting one could loop in a cycle.
                            .filter(|d| !d.deleting)
                            .map(|d| Work::Delete(d.id.uid.clone()))
                            .collect(),
                    )
                }
            };
            match follow {
                Some(work) => Ok(work),
                None => {
                    cluster.remove_finalizer(&id, FINALIZER_FOREGROUND).await?;
                    Ok(Vec::new())
                }
            }
        }
        Work::Delete(_) => {
            if latest.deleting || latest.owners.is_empty() {
                return Ok(Vec::new());
            }
            let mut states = Vec::new();
            for r in &latest.owners {
                let state = match owner_location(&latest.id, r) {
                    None => OwnerState::Unresolvable,
                    Some(_) if absent.contains(&r.uid) => OwnerState::Absent,
                    Some((kind, ns)) => {
                        let live = cluster.get(kind, ns.as_deref(), &r.name).await?;
                        let s = owner_state(r, live.as_ref());
                        if s == OwnerState::Absent {
                            absent.insert(&r.uid);
                        }
                        s
                    }
                };
                states.push((r.clone(), state));
            }
            let (has_dependents, cycle) = {
                let g = graph.lock();
                let deps = g.dependents(uid);
                (
                    !deps.is_empty(),
                    deps.iter().any(|d| d.deleting_dependents()),
                )
            };
            match decide_dependent(&latest, &states, has_dependents, cycle) {
                DependentAction::Keep => {}
                DependentAction::RemoveOwners(owners) => {
                    cluster.remove_owners(&id, &owners).await?
                }
                DependentAction::Delete(policy) => cluster.delete(&id, policy).await?,
                DependentAction::UnblockThenDeleteForeground => {
                    cluster.unblock_owners(&id).await?;
                    cluster.delete(&id, Policy::Foreground).await?;
                }
            }
            Ok(Vec::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gc::graph::tests::{node, owner_ref};
    use std::collections::{BTreeMap, VecDeque};

    fn kind(api_version: &str, k: &str) -> &'static Kind {
        lookup(api_version, k).unwrap()
    }

    /// An in-memory API server: deletion with finalizers and propagation policies as
    /// Skiff's (and Kubernetes's) registry does it. Every change is recorded as an event
    /// for the graph.
    #[derive(Default)]
    struct Model {
        objects: Mutex<BTreeMap<Uid, Node>>,
        events: Mutex<Vec<Result<Node, Uid>>>,
        writes: Mutex<usize>,
        /// Objects whose deletion waits for someone else (graceful pod deletion).
        held: Mutex<HashSet<Uid>>,
    }

    impl Model {
        fn add(&self, n: Node) {
            self.objects.lock().insert(n.id.uid.clone(), n.clone());
            self.events.lock().push(Ok(n));
        }

        fn has(&self, uid: &str) -> bool {
            self.objects.lock().contains_key(uid)
        }

        fn obj(&self, uid: &str) -> Node {
            self.objects.lock()[uid].clone()
        }

        /// A client's DELETE (kubectl, or the collector).
        fn delete_uid(&self, uid: &str, policy: Policy) {
            let mut objs = self.objects.lock();
            let Some(n) = objs.get_mut(uid) else { return };
            match policy {
                Policy::Foreground => n.foreground = true,
                Policy::Orphan => n.orphan = true,
                Policy::Background => {}
            }
            if n.foreground || n.orphan || self.held.lock().contains(uid) {
                n.deleting = true;
                let n = n.clone();
                self.events.lock().push(Ok(n));
            } else {
                objs.remove(uid);
                self.events.lock().push(Err(uid.to_string()));
            }
        }

        /// The holder of a held object lets it go.
        fn release(&self, uid: &str) {
            self.held.lock().remove(uid);
            self.objects.lock().remove(uid);
            self.events.lock().push(Err(uid.to_string()));
        }

        fn write(&self, uid: &str, f: impl FnOnce(&mut Node)) {
            *self.writes.lock() += 1;
            let mut objs = self.objects.lock();
            let Some(n) = objs.get_mut(uid) else { return };
            f(n);
            if n.deleting && !n.foreground && !n.orphan && !self.held.lock().contains(uid) {
                objs.remove(uid);
                self.events.lock().push(Err(uid.to_string()));
            } else {
                let n = n.clone();
                self.events.lock().push(Ok(n));
            }
        }

        /// Feeds the events to the graph and runs the queue until nothing is left; panics
        /// if that takes more than `limit` steps (a hang).
        async fn settle(&self, graph: &Mutex<Graph>, limit: usize) {
            let absent = Absent::default();
            let mut queue: VecDeque<Work> = VecDeque::new();
            let push = |q: &mut VecDeque<Work>, w: Vec<Work>| {
                for w in w {
                    if !q.contains(&w) {
                        q.push_back(w);
                    }
                }
            };
            for step in 0.. {
                assert!(step < limit, "no quiescence after {limit} steps: {queue:?}");
                let events: Vec<_> = std::mem::take(&mut *self.events.lock());
                for e in events {
                    let w = match e {
                        Ok(n) => graph.lock().upsert(n),
                        Err(uid) => graph.lock().remove(&uid),
                    };
                    push(&mut queue, w);
                }
                let Some(w) = queue.pop_front() else { break };
                let follow = process(self, graph, &absent, &w).await.unwrap();
                push(&mut queue, follow);
            }
        }
    }

    impl Cluster for Model {
        type Error = std::convert::Infallible;

        async fn get(
            &self,
            kind: &'static Kind,
            namespace: Option<&str>,
            name: &str,
        ) -> Result<Option<Node>, Self::Error> {
            Ok(self
                .objects
                .lock()
                .values()
                .find(|n| {
                    n.id.kind == kind && n.id.namespace.as_deref() == namespace && n.id.name == name
                })
                .cloned())
        }

        async fn delete(&self, id: &Identity, policy: Policy) -> Result<(), Self::Error> {
            *self.writes.lock() += 1;
            self.delete_uid(&id.uid, policy);
            Ok(())
        }

        async fn remove_owners(&self, id: &Identity, owners: &[Uid]) -> Result<(), Self::Error> {
            self.write(&id.uid, |n| n.owners.retain(|r| !owners.contains(&r.uid)));
            Ok(())
        }

        async fn unblock_owners(&self, id: &Identity) -> Result<(), Self::Error> {
            self.write(&id.uid, |n| {
                for r in &mut n.owners {
                    r.block_owner_deletion = Some(false);
                }
            });
            Ok(())
        }

        async fn remove_finalizer(
            &self,
            id: &Identity,
            finalizer: &str,
        ) -> Result<(), Self::Error> {
            self.write(&id.uid, |n| match finalizer {
                FINALIZER_FOREGROUND => n.foreground = false,
                FINALIZER_ORPHAN => n.orphan = false,
                _ => {}
            });
            Ok(())
        }
    }

    /// deployment d1 → replicaset r1 → pods p1, p2 (blocking references, as the
    /// controllers create them).
    fn deployment_tree(m: &Model) {
        let dep = kind("apps/v1", "Deployment");
        let rs = kind("apps/v1", "ReplicaSet");
        let pod = kind("v1", "Pod");
        m.add(node(dep, "web", "d1", vec![]));
        m.add(node(
            rs,
            "web-5f",
            "r1",
            vec![owner_ref(dep, "web", "d1", true)],
        ));
        m.add(node(
            pod,
            "web-5f-a",
            "p1",
            vec![owner_ref(rs, "web-5f", "r1", true)],
        ));
        m.add(node(
            pod,
            "web-5f-b",
            "p2",
            vec![owner_ref(rs, "web-5f", "r1", true)],
        ));
    }

    #[tokio::test]
    async fn steady_state_does_nothing() {
        let (m, g) = (Model::default(), Mutex::new(Graph::default()));
        deployment_tree(&m);
        m.settle(&g, 100).await;
        assert_eq!(*m.writes.lock(), 0);
        assert_eq!(m.objects.lock().len(), 4);
    }

    #[tokio::test]
    async fn background_deletion_collects_the_whole_tree() {
        let (m, g) = (Model::default(), Mutex::new(Graph::default()));
        deployment_tree(&m);
        m.settle(&g, 100).await;
        m.delete_uid("d1", Policy::Background);
        m.settle(&g, 100).await;
        assert!(m.objects.lock().is_empty());
        assert!(g.lock().is_empty());
    }

    #[tokio::test]
    async fn foreground_chain_deletes_bottom_up_and_owner_goes_last() {
        let (m, g) = (Model::default(), Mutex::new(Graph::default()));
        deployment_tree(&m);
        m.settle(&g, 100).await;
        // p2 stays after its DELETE, as a bound pod does until its node agent confirms.
        m.held.lock().insert("p2".into());
        m.delete_uid("d1", Policy::Foreground);
        m.settle(&g, 200).await;
        assert!(!m.has("p1"), "the other pod is collected");
        assert!(m.obj("p2").deleting, "the held pod was asked to go");
        assert!(m.obj("r1").deleting_dependents() && m.obj("d1").deleting_dependents());
        // The pod finally goes: the replicaset, then the deployment follow.
        m.release("p2");
        m.settle(&g, 200).await;
        assert!(m.objects.lock().is_empty(), "{:?}", m.objects.lock().keys());
    }

    #[tokio::test]
    async fn orphan_deletion_keeps_dependents_without_the_reference() {
        let (m, g) = (Model::default(), Mutex::new(Graph::default()));
        deployment_tree(&m);
        m.settle(&g, 100).await;
        m.delete_uid("r1", Policy::Orphan);
        m.settle(&g, 100).await;
        assert!(!m.has("r1"));
        assert!(m.obj("p1").owners.is_empty() && m.obj("p2").owners.is_empty());
        assert!(m.has("d1"));
    }

    #[tokio::test]
    async fn partial_owners_lose_only_the_absent_reference() {
        let (m, g) = (Model::default(), Mutex::new(Graph::default()));
        let cm = kind("v1", "ConfigMap");
        let svc = kind("v1", "Service");
        m.add(node(svc, "a", "s1", vec![]));
        m.add(node(
            cm,
            "c",
            "c1",
            vec![
                owner_ref(svc, "a", "s1", false),
                owner_ref(svc, "gone", "s2", false),
            ],
        ));
        m.settle(&g, 100).await;
        let c = m.obj("c1");
        assert_eq!(c.owners.len(), 1);
        assert_eq!(c.owners[0].uid, "s1");
    }

    #[tokio::test]
    async fn same_name_other_uid_owner_counts_as_absent() {
        let (m, g) = (Model::default(), Mutex::new(Graph::default()));
        let rs = kind("apps/v1", "ReplicaSet");
        let pod = kind("v1", "Pod");
        m.add(node(rs, "web", "r-new", vec![]));
        m.add(node(
            pod,
            "p",
            "p1",
            vec![owner_ref(rs, "web", "r-old", true)],
        ));
        m.settle(&g, 100).await;
        assert!(!m.has("p1"));
        assert!(m.has("r-new"));
    }

    #[tokio::test]
    async fn unresolvable_and_cluster_scoped_owners() {
        let (m, g) = (Model::default(), Mutex::new(Graph::default()));
        let pod = kind("v1", "Pod");
        let node_kind = kind("v1", "Node");
        let ns_kind = kind("v1", "Namespace");
        let mut widget = owner_ref(pod, "w", "w1", true);
        widget.api_version = "example.com/v1".into();
        widget.kind = "Widget".into();
        m.add(node(pod, "kept", "p1", vec![widget]));
        m.add(node(node_kind, "n1", "n1", vec![]));
        m.add(node(
            pod,
            "on-node",
            "p2",
            vec![owner_ref(node_kind, "n1", "n1", false)],
        ));
        m.add(node(
            pod,
            "on-gone-node",
            "p3",
            vec![owner_ref(node_kind, "n2", "n2", false)],
        ));
        // A cluster-scoped object naming a namespaced owner: unresolvable, kept.
        m.add(node(
            ns_kind,
            "x",
            "ns1",
            vec![owner_ref(pod, "kept", "p1", true)],
        ));
        m.settle(&g, 100).await;
        assert!(m.has("p1") && m.has("p2") && m.has("ns1"));
        assert!(!m.has("p3"));
    }

    #[tokio::test]
    async fn namespaced_owner_in_another_namespace_is_absent() {
        let (m, g) = (Model::default(), Mutex::new(Graph::default()));
        let svc = kind("v1", "Service");
        let cm = kind("v1", "ConfigMap");
        let mut owner = node(svc, "a", "s1", vec![]);
        owner.id.namespace = Some("other".into());
        m.add(owner);
        m.add(node(cm, "c", "c1", vec![owner_ref(svc, "a", "s1", false)]));
        m.settle(&g, 100).await;
        assert!(!m.has("c1"));
        assert!(m.has("s1"));
    }

    #[tokio::test]
    async fn foreground_cycle_terminates() {
        let (m, g) = (Model::default(), Mutex::new(Graph::default()));
        let cm = kind("v1", "ConfigMap");
        m.add(node(cm, "a", "a", vec![owner_ref(cm, "b", "b", true)]));
        m.add(node(cm, "b", "b", vec![owner_ref(cm, "a", "a", true)]));
        m.settle(&g, 100).await;
        assert_eq!(*m.writes.lock(), 0);
        m.delete_uid("a", Policy::Foreground);
        m.settle(&g, 200).await;
        assert!(m.objects.lock().is_empty(), "{:?}", m.objects.lock());
    }

    #[tokio::test]
    async fn background_cycle_is_left_alone() {
        // Two objects owning each other, both present: every owner is solid.
        let (m, g) = (Model::default(), Mutex::new(Graph::default()));
        let cm = kind("v1", "ConfigMap");
        m.add(node(cm, "a", "a", vec![owner_ref(cm, "b", "b", false)]));
        m.add(node(cm, "b", "b", vec![owner_ref(cm, "a", "a", false)]));
        m.settle(&g, 100).await;
        assert_eq!(m.objects.lock().len(), 2);
        // One goes: the other follows, and nothing loops.
        m.delete_uid("a", Policy::Background);
        m.settle(&g, 100).await;
        assert!(m.objects.lock().is_empty());
    }

    #[test]
    fn decisions() {
        let cm = kind("v1", "ConfigMap");
        let item = node(cm, "x", "x", vec![]);
        let r = |uid: &str| owner_ref(cm, uid, uid, true);
        let present = OwnerState::Present { waiting: false };
        let waiting = OwnerState::Present { waiting: true };
        assert_eq!(
            decide_dependent(&item, &[], false, false),
            DependentAction::Keep
        );
        assert_eq!(
            decide_dependent(&item, &[(r("a"), present)], false, false),
            DependentAction::Keep
        );
        assert_eq!(
            decide_dependent(
                &item,
                &[
                    (r("a"), present),
                    (r("b"), OwnerState::Absent),
                    (r("c"), waiting)
                ],
                false,
                false
            ),
            DependentAction::RemoveOwners(vec!["b".into(), "c".into()])
        );
        assert_eq!(
            decide_dependent(&item, &[(r("a"), OwnerState::Absent)], true, false),
            DependentAction::Delete(Policy::Background)
        );
        assert_eq!(
            decide_dependent(&item, &[(r("a"), waiting)], true, false),
            DependentAction::Delete(Policy::Foreground)
        );
        assert_eq!(
            decide_dependent(&item, &[(r("a"), waiting)], false, false),
            DependentAction::Delete(Policy::Background)
        );
        assert_eq!(
            decide_dependent(&item, &[(r("a"), waiting)], true, true),
            DependentAction::UnblockThenDeleteForeground
        );
        assert_eq!(
            decide_dependent(
                &item,
                &[
                    (r("a"), OwnerState::Unresolvable),
                    (r("b"), OwnerState::Absent)
                ],
                false,
                false
            ),
            DependentAction::RemoveOwners(vec!["b".into()])
        );
        let mut deleting = item.clone();
        deleting.deleting = true;
        assert_eq!(
            decide_dependent(&deleting, &[(r("a"), OwnerState::Absent)], false, false),
            DependentAction::Keep
        );
        let mut orphaner = item;
        orphaner.orphan = true;
        assert_eq!(
            decide_dependent(&orphaner, &[(r("a"), OwnerState::Absent)], false, false),
            DependentAction::Delete(Policy::Orphan)
        );
    }
}
