//! An informer cache grouped for the endpoints controller's look-ups: pods and Services by
//! namespace, EndpointSlices by (namespace, Service name). kube-runtime's reflector store
//! only answers by name or by scanning everything; a sync here reads one group.
//!
//! One writer (the watch task of the resource) feeds it watcher events; any number of
//! workers read it. Applying an event returns what changed, including the previous
//! version of an object, so a pod whose labels changed can be unhooked from the Services
//! that selected its old labels.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kube::runtime::watcher;
use kube::ResourceExt;
use parking_lot::RwLock;

/// (namespace, group within it): the unit a sync reads.
pub type GroupKey = (String, String);

/// What one watcher event changed.
pub enum Change<K> {
    /// Created or updated; `old` is the version replaced, if any.
    Applied { old: Option<Arc<K>>, new: Arc<K> },
    /// Deleted, with its last known state.
    Deleted(Arc<K>),
    /// A (re)list finished: the whole content was replaced (deletions during a watch gap
    /// are not reported one by one, so consumers should resync everything).
    Relisted,
    /// Nothing visible yet (an object of a list in progress, or a list start).
    Nothing,
}

/// A grouped, read-mostly cache of one resource.
pub struct Cache<K> {
    /// Which group an object belongs to, within its namespace.
    group_of: fn(&K) -> String,
    inner: RwLock<Inner<K>>,
}

struct Inner<K> {
    groups: HashMap<GroupKey, BTreeMap<String, Arc<K>>>,
    /// (namespace, name) → group, to find an object whose group changed.
    group_by_name: HashMap<(String, String), String>,
    /// Objects of a list in progress, swapped in at its end.
    relist: Vec<Arc<K>>,
    synced: bool,
}

impl<K: kube::Resource + Clone> Cache<K> {
    /// An empty cache grouping objects by `group_of` (return "" for one group per
    /// namespace).
    pub fn new(group_of: fn(&K) -> String) -> Self {
        Cache {
            group_of,
            inner: RwLock::new(Inner {
                groups: HashMap::new(),
                group_by_name: HashMap::new(),
                relist: Vec::new(),
                synced: false,
            }),
        }
    }

    /// Applies one watcher event.
    pub fn apply(&self, event: watcher::Event<K>) -> Change<K> {
        let mut g = self.inner.write();
        match event {
            watcher::Event::Init => {
                g.relist.clear();
                Change::Nothing
            }
            watcher::Event::InitApply(obj) => {
                g.relist.push(Arc::new(obj));
                Change::Nothing
            }
            watcher::Event::InitDone => {
                let objs = std::mem::take(&mut g.relist);
                g.groups.clear();
                g.group_by_name.clear();
                for obj in objs {
                    self.insert(&mut g, obj);
                }
                g.synced = true;
                Change::Relisted
            }
            watcher::Event::Apply(obj) => {
                let new = Arc::new(obj);
                let old = self.insert(&mut g, new.clone());
                Change::Applied { old, new }
            }
            watcher::Event::Delete(obj) => {
                let ns = obj.namespace().unwrap_or_default();
                let name = obj.name_any();
                let removed = g.remove(&ns, &name);
                Change::Deleted(removed.unwrap_or_else(|| Arc::new(obj)))
            }
        }
    }

    fn insert(&self, g: &mut Inner<K>, obj: Arc<K>) -> Option<Arc<K>> {
        let ns = obj.namespace().unwrap_or_default();
        let name = obj.name_any();
        let old = g.remove(&ns, &name);
        let group = (self.group_of)(&obj);
        g.group_by_name
            .insert((ns.clone(), name.clone()), group.clone());
        g.groups.entry((ns, group)).or_default().insert(name, obj);
        old
    }

    /// The object `namespace/name`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let g = self.inner.read();
        let group = g
            .group_by_name
            .get(&(namespace.to_string(), name.to_string()))?;
        g.groups
            .get(&(namespace.to_string(), group.clone()))?
            .get(name)
            .cloned()
    }

    /// The objects of one group, by name.
    pub fn group(&self, namespace: &str, group: &str) -> Vec<Arc<K>> {
        let g = self.inner.read();
        g.groups
            .get(&(namespace.to_string(), group.to_string()))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every object.
    pub fn all(&self) -> Vec<Arc<K>> {
        let g = self.inner.read();
        g.groups
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// Whether the first list has completed.
    pub fn synced(&self) -> bool {
        self.inner.read().synced
    }
}

impl<K> Inner<K> {
    fn remove(&mut self, ns: &str, name: &str) -> Option<Arc<K>> {
        let group = self
            .group_by_name
            .remove(&(ns.to_string(), name.to_string()))?;
        let key = (ns.to_string(), group);
        let map = self.groups.get_mut(&key)?;
        let old = map.remove(name);
        if map.is_empty() {
            self.groups.remove(&key);
        }
        old
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn cm(ns: &str, name: &str, group: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                labels: Some([("g".to_string(), group.to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn group_label(c: &ConfigMap) -> String {
        c.labels().get("g").cloned().unwrap_or_default()
    }

    #[test]
    fn regrouping_and_relist() {
        let cache = Cache::new(group_label);
        cache.apply(watcher::Event::Init);
        cache.apply(watcher::Event::InitApply(cm("a", "x", "1")));
        assert!(cache.group("a", "1").is_empty() && !cache.synced());
        assert!(matches!(
            cache.apply(watcher::Event::InitDone),
            Change::Relisted
        ));
        assert_eq!(cache.group("a", "1").len(), 1);
        // Moving to another group returns the old version and leaves the old group.
        let Change::Applied { old, .. } = cache.apply(watcher::Event::Apply(cm("a", "x", "2")))
        else {
            panic!("not applied")
        };
        assert_eq!(group_label(&old.unwrap()), "1");
        assert!(cache.group("a", "1").is_empty());
        assert_eq!(cache.group("a", "2").len(), 1);
        assert!(cache.get("a", "x").is_some() && cache.get("b", "x").is_none());
        // A relist without it drops it.
        cache.apply(watcher::Event::Init);
        cache.apply(watcher::Event::InitApply(cm("a", "y", "2")));
        cache.apply(watcher::Event::InitDone);
        assert!(cache.get("a", "x").is_none());
        assert_eq!(cache.all().len(), 1);
        assert!(matches!(
            cache.apply(watcher::Event::Delete(cm("a", "y", "2"))),
            Change::Deleted(_)
        ));
        assert!(cache.all().is_empty());
    }
}
