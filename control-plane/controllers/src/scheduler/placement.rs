//! One scheduling decision: filter the nodes, score the feasible ones, pick the best —
//! uniformly at random among equals, so identical nodes fill evenly.
//!
//! Pure over the [`Cache`]: the caller holds the scheduler's lock, so the picture cannot
//! change mid-decision, and assumes the pod on the returned node before releasing it.

use std::collections::BTreeMap;
use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::cache::Cache;
use super::filter::{filter, PreFilter};
use super::pod::PodInfo;
use super::score::{raw, total, Maxima, Raw};

/// Below this many nodes every node is evaluated whatever the percentage
/// (kube-scheduler `minFeasibleNodesToFind`).
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;

/// Why a pod fits no node: how many nodes there are and how many failed for each reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FitError {
    pub nodes: usize,
    pub reasons: BTreeMap<String, usize>,
}

impl fmt::Display for FitError {
    /// Worded as kube-scheduler's `FitError.Error()` (reasons sorted as strings), with
    /// the preemption postscript it adds when preemption cannot help — this scheduler
    /// never preempts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nodes == 0 {
            return write!(f, "no nodes available to schedule pods");
        }
        let mut parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        parts.sort();
        write!(
            f,
            "0/{} nodes are available: {}.",
            self.nodes,
            parts.join(", ")
        )?;
        write!(
            f,
            " preemption: 0/{0} nodes are available: {0} Preemption is not helpful for scheduling.",
            self.nodes
        )
    }
}

/// Makes decisions; keeps scratch space and the random source between them.
pub struct Placer {
    rng: StdRng,
    candidates: Vec<(usize, Raw)>,
    /// Percentage of nodes to evaluate (1–100), 0 for kube's adaptive default.
    percentage: u32,
    /// Where the next sampled evaluation starts, so sampling rotates through the nodes.
    next_start: usize,
}

impl Placer {
    /// `percentage_of_nodes_to_score`: 100 evaluates every node; 0 picks kube's adaptive
    /// percentage (50% minus 1% per 125 nodes, at least 5%); with fewer than 100 nodes
    /// all are evaluated. `seed` makes the tie-breaking reproducible (tests).
    pub fn new(percentage_of_nodes_to_score: u32, seed: Option<u64>) -> Placer {
        Placer {
            rng: match seed {
                Some(s) => StdRng::seed_from_u64(s),
                None => StdRng::from_rng(&mut rand::rng()),
            },
            candidates: Vec::new(),
            percentage: percentage_of_nodes_to_score.min(100),
            next_start: 0,
        }
    }

    fn nodes_to_find(&self, all: usize) -> usize {
        if all < MIN_FEASIBLE_NODES_TO_FIND || self.percentage >= 100 {
            return all;
        }
        let pct = if self.percentage == 0 {
            (50 - (all / 125) as i64).max(5) as usize
        } else {
            self.percentage as usize
        };
        (all * pct / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
    }

    /// Chooses a node for `pod`: the index of the chosen entry in `cache.nodes()`.
    ///
    /// # Errors
    /// [`FitError`] when no node passes the filters.
    pub fn place(&mut self, pod: &PodInfo, cache: &Cache) -> Result<usize, FitError> {
        let nodes = cache.nodes();
        let pre = PreFilter::compute(pod, cache);
        let want = self.nodes_to_find(nodes.len());
        self.candidates.clear();
        let mut maxima = Maxima::default();
        let len = nodes.len();
        let start = if len == 0 { 0 } else { self.next_start % len };
        let mut scanned = 0;
        while scanned < len && self.candidates.len() < want {
            let i = (start + scanned) % len;
            scanned += 1;
            let node = &nodes[i];
            let Some(data) = &node.data else { continue };
            if filter(pod, &pre, node).is_ok() {
                let r = raw(pod, &pre, node, data);
                maxima.include(&r);
                self.candidates.push((i, r));
            }
        }
        if len > 0 {
            self.next_start = (start + scanned) % len;
        }
        if self.candidates.is_empty() {
            return Err(diagnose(pod, cache, &pre));
        }
        // Reservoir sampling over the best: the k-th node tying the best so far replaces
        // the choice with probability 1/k, which makes every tied node equally likely.
        let mut best = (i64::MIN, 0usize);
        let mut ties = 0u32;
        for (i, r) in &self.candidates {
            let s = total(r, &maxima);
            if s > best.0 {
                best = (s, *i);
                ties = 1;
            } else if s == best.0 {
                ties += 1;
                if self.rng.random_range(0..ties) == 0 {
                    best.1 = *i;
                }
            }
        }
        Ok(best.1)
    }
}

/// Runs every filter again to count the reasons (only when nothing fits, so allocating
/// here costs the fast path nothing).
fn diagnose(pod: &PodInfo, cache: &Cache, pre: &PreFilter<'_>) -> FitError {
    let mut reasons = BTreeMap::new();
    let mut nodes = 0;
    let mut buf = Vec::new();
    for node in cache.nodes() {
        if node.data.is_none() {
            continue;
        }
        nodes += 1;
        if let Err(f) = filter(pod, pre, node) {
            buf.clear();
            f.reasons(pod, &mut buf);
            for r in buf.drain(..) {
                *reasons.entry(r).or_insert(0) += 1;
            }
        }
    }
    FitError { nodes, reasons }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::*;
    use crate::scheduler::cache::tests::{node_data, pod};
    use crate::scheduler::pod::{PodInfo, Resources};

    fn name(c: &Cache, i: usize) -> String {
        c.nodes()[i].name.to_string()
    }

    #[test]
    fn message_matches_kube_scheduler_wording() {
        let mut c = Cache::new();
        let mut small = node_data(500, 1 << 30, 10);
        small.labels.insert("zone".into(), "a".into());
        c.set_node("n1", small.clone());
        c.set_node("n2", small);
        let mut other = node_data(8000, 1 << 30, 10);
        other.labels.insert("zone".into(), "b".into());
        c.set_node("n3", other);
        let mut p = (*pod("p", 1000, 0, None)).clone();
        p.node_selector.insert("zone".into(), "a".into());
        let err = Placer::new(100, Some(1)).place(&p, &c).unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
             2 Insufficient cpu. preemption: 0/3 nodes are available: 3 Preemption is not \
             helpful for scheduling."
        );
        let none = Placer::new(100, Some(1))
            .place(&p, &Cache::new())
            .unwrap_err();
        assert_eq!(none.to_string(), "no nodes available to schedule pods");
    }

    #[test]
    fn chooses_the_best_scoring_node() {
        let mut c = Cache::new();
        c.set_node("busy", node_data(1000, 1000, 10));
        c.set_node("idle", node_data(1000, 1000, 10));
        c.add_bound(pod("x", 800, 800, None), "busy");
        let mut placer = Placer::new(100, Some(7));
        for _ in 0..20 {
            let i = placer.place(&pod("p", 100, 100, None), &c).unwrap();
            assert_eq!(name(&c, i), "idle");
        }
    }

    #[test]
    fn ties_are_broken_uniformly() {
        let mut c = Cache::new();
        for i in 0..4 {
            c.set_node(&format!("n{i}"), node_data(1000, 1000, 10));
        }
        let mut placer = Placer::new(100, Some(42));
        let mut hits: HashMap<String, u32> = HashMap::new();
        let p = pod("p", 10, 10, None);
        for _ in 0..8000 {
            let i = placer.place(&p, &c).unwrap();
            *hits.entry(name(&c, i)).or_default() += 1;
        }
        assert_eq!(hits.len(), 4);
        for (n, k) in &hits {
            // Expected 2000 each; a fair coin stays well within ±10%.
            assert!((1800..=2200).contains(k), "{n} chosen {k} times: {hits:?}");
        }
    }

    #[test]
    fn sampling_evaluates_a_rotating_subset_on_large_clusters() {
        let mut c = Cache::new();
        for i in 0..1000 {
            c.set_node(&format!("n{i:04}"), node_data(1000, 1000, 10));
        }
        let mut placer = Placer::new(0, Some(3));
        assert_eq!(placer.nodes_to_find(1000), 420);
        assert_eq!(placer.nodes_to_find(99), 99);
        assert_eq!(placer.nodes_to_find(150), 100);
        assert_eq!(Placer::new(100, None).nodes_to_find(5000), 5000);
        assert_eq!(
            Placer::new(0, None).nodes_to_find(10000),
            500,
            "floor of 5%"
        );
        let mut seen = std::collections::HashSet::new();
        let p = pod("p", 1, 1, None);
        for _ in 0..50 {
            seen.insert(placer.place(&p, &c).unwrap());
        }
        assert!(
            seen.len() > 40,
            "rotation reaches different nodes: {}",
            seen.len()
        );
    }

    /// 30 nodes, 300 pods of three owners with mixed requests, placed one after the other
    /// as the scheduler loop does (assume after each decision): no node is overcommitted,
    /// and every owner's replicas are spread evenly.
    #[test]
    fn simulation_places_without_overcommit_and_spreads_replicas() {
        let mut c = Cache::new();
        for i in 0..30 {
            c.set_node(&format!("n{i:02}"), node_data(4000, 8 << 30, 110));
        }
        let mut placer = Placer::new(100, Some(9));
        let sizes = [(100, 128 << 20), (250, 256 << 20), (500, 512 << 20)];
        let mut placed = 0;
        for k in 0..300 {
            let owner = format!("rs{}", k % 3);
            let (cpu, mem) = sizes[k % 3];
            let p = pod(&format!("p{k}"), cpu, mem, Some(&owner));
            if let Ok(i) = placer.place(&p, &c) {
                let node = c.nodes()[i].name.clone();
                c.assume(p, &node);
                placed += 1;
            }
        }
        // Each node takes 10 pods of ~283m and ~300Mi average; total cpu 85,000m of
        // 120,000m, so everything fits.
        assert_eq!(placed, 300);
        for n in c.nodes() {
            let d = n.data.as_ref().unwrap();
            assert!(
                n.requested.cpu <= d.allocatable.cpu,
                "{} cpu overcommitted",
                n.name
            );
            assert!(n.requested.memory <= d.allocatable.memory);
            assert!(n.pods.len() as i64 <= d.max_pods);
        }
        for o in ["rs0", "rs1", "rs2"] {
            let id = c.owner_id(o).unwrap();
            let counts: Vec<u32> = c.nodes().iter().map(|n| n.owner_count(id)).collect();
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(max - min <= 1, "{o} spread {counts:?}");
        }
    }

    #[test]
    fn simulation_fills_to_capacity_and_reports_the_rest() {
        let mut c = Cache::new();
        for i in 0..3 {
            c.set_node(&format!("n{i}"), node_data(1000, 1 << 30, 110));
        }
        let mut placer = Placer::new(100, Some(5));
        let mut failed = None;
        for k in 0..40 {
            let p = Arc::new(PodInfo {
                request: Resources {
                    cpu: 100,
                    memory: 1,
                    scalar: vec![],
                },
                ..(*pod(&format!("p{k}"), 0, 0, None)).clone()
            });
            match placer.place(&p, &c) {
                Ok(i) => {
                    let node = c.nodes()[i].name.clone();
                    c.assume(p, &node);
                }
                Err(e) => failed = Some(e),
            }
        }
        for n in c.nodes() {
            assert_eq!(n.requested.cpu, 1000, "{} filled exactly", n.name);
        }
        assert_eq!(
            failed.unwrap().reasons,
            BTreeMap::from([("Insufficient cpu".to_string(), 3)])
        );
    }
}
