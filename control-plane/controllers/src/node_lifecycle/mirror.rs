//! A watch-fed map of projections that reports what changed, old and new.
//!
//! kube-runtime's reflector keeps whole objects and says nothing about what an event
//! replaced; the node lifecycle controller needs the old value (did the node's NoExecute
//! taints change? did the pod move?) and keeps only small projections of pods, so it
//! mirrors the watch itself.
//!
//! A re-list (`Init`, `InitApply`…, `InitDone`, after the watch expired) is diffed against
//! what was there: objects the re-list did not return were deleted while the watch was
//! down and are reported as deletions at `InitDone`.

use std::collections::{HashMap, HashSet};

use kube::runtime::watcher::Event;

/// One change: `old` None means added, `new` None means deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct Change<T> {
    pub key: String,
    pub old: Option<T>,
    pub new: Option<T>,
}

/// Projections of the watched objects by key.
pub struct Mirror<T> {
    items: HashMap<String, T>,
    /// Keys seen since the current re-list began; `None` outside a re-list.
    relisting: Option<HashSet<String>>,
    synced: bool,
}

impl<T: Clone + PartialEq> Default for Mirror<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone + PartialEq> Mirror<T> {
    pub fn new() -> Self {
        Mirror {
            items: HashMap::new(),
            relisting: None,
            synced: false,
        }
    }

    /// Whether the first list has been applied completely.
    pub fn synced(&self) -> bool {
        self.synced
    }

    pub fn get(&self, key: &str) -> Option<&T> {
        self.items.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &T)> {
        self.items.iter()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Applies one watch event. `project` turns an object into its key and projection, or
    /// `None` for objects this mirror ignores (which count as absent). Returns the changes,
    /// leaving out updates whose projection did not change.
    pub fn apply<K>(
        &mut self,
        event: Event<K>,
        project: impl Fn(&K) -> Option<(String, T)>,
        key_of: impl Fn(&K) -> String,
    ) -> Vec<Change<T>> {
        match event {
            Event::Init => {
                self.relisting = Some(HashSet::new());
                Vec::new()
            }
            Event::InitApply(obj) => {
                if let Some(seen) = self.relisting.as_mut() {
                    seen.insert(key_of(&obj));
                }
                self.upsert(&obj, &project, &key_of).into_iter().collect()
            }
            Event::Apply(obj) => self.upsert(&obj, &project, &key_of).into_iter().collect(),
            Event::Delete(obj) => self.remove(key_of(&obj)).into_iter().collect(),
            Event::InitDone => {
                self.synced = true;
                let Some(seen) = self.relisting.take() else {
                    return Vec::new();
                };
                let gone: Vec<String> = self
                    .items
                    .keys()
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                gone.into_iter().filter_map(|k| self.remove(k)).collect()
            }
        }
    }

    fn upsert<K>(
        &mut self,
        obj: &K,
        project: &impl Fn(&K) -> Option<(String, T)>,
        key_of: &impl Fn(&K) -> String,
    ) -> Option<Change<T>> {
        match project(obj) {
            None => self.remove(key_of(obj)),
            Some((key, new)) => {
                let old = self.items.insert(key.clone(), new.clone());
                if old.as_ref() == Some(&new) {
                    return None;
                }
                Some(Change {
                    key,
                    old,
                    new: Some(new),
                })
            }
        }
    }

    fn remove(&mut self, key: String) -> Option<Change<T>> {
        let old = self.items.remove(&key)?;
        Some(Change {
            key,
            old: Some(old),
            new: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(v: &(String, u32)) -> Option<(String, u32)> {
        // Odd values stand for objects the mirror ignores.
        v.1.is_multiple_of(2).then(|| (v.0.clone(), v.1))
    }

    fn key_of(v: &(String, u32)) -> String {
        v.0.clone()
    }

    fn obj(k: &str, v: u32) -> (String, u32) {
        (k.to_string(), v)
    }

    #[test]
    fn reports_adds_updates_and_deletes_with_old_values() {
        let mut m = Mirror::new();
        assert!(!m.synced());
        assert!(m.apply(Event::Init, project, key_of).is_empty());
        let c = m.apply(Event::InitApply(obj("a", 2)), project, key_of);
        assert_eq!(c[0].old, None);
        assert_eq!(c[0].new, Some(2));
        assert!(m.apply(Event::InitDone, project, key_of).is_empty());
        assert!(m.synced());
        // An update that does not change the projection is not reported.
        assert!(m
            .apply(Event::Apply(obj("a", 2)), project, key_of)
            .is_empty());
        let c = m.apply(Event::Apply(obj("a", 4)), project, key_of);
        assert_eq!((c[0].old, c[0].new), (Some(2), Some(4)));
        // An object that stops matching the projection is a deletion.
        let c = m.apply(Event::Apply(obj("a", 5)), project, key_of);
        assert_eq!((c[0].old, c[0].new), (Some(4), None));
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn relist_reports_objects_deleted_while_the_watch_was_down() {
        let mut m = Mirror::new();
        m.apply(Event::Apply(obj("a", 2)), project, key_of);
        m.apply(Event::Apply(obj("b", 2)), project, key_of);
        m.apply(Event::Init, project, key_of);
        m.apply(Event::InitApply(obj("a", 2)), project, key_of);
        let c = m.apply(Event::InitDone, project, key_of);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].key, "b");
        assert_eq!(c[0].new, None);
        assert!(m.get("a").is_some());
        assert!(m.get("b").is_none());
    }
}
