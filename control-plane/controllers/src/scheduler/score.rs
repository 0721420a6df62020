//! Scores: which feasible node is best. Each score is 0–100 (kube's `MaxNodeScore`),
//! combined with kube-scheduler's default plugin weights.
//!
//! | score                | weight | raw value                          | normalised           |
//! |----------------------|--------|------------------------------------|----------------------|
//! | least allocated      | 1      | free share of cpu and memory       | already 0–100        |
//! | owner spread         | 2      | replicas of the pod's owner there  | fewer → 100          |
//! | preferred affinity   | 2      | sum of weights of matching terms   | most → 100           |
//! | PreferNoSchedule     | 3      | untolerated PreferNoSchedule taints| fewer → 100          |

use super::cache::NodeInfo;
use super::filter::PreFilter;
use super::node::NodeData;
use super::pod::PodInfo;
use super::taint::{tolerated, Effect};

/// Highest score of one plugin.
pub const MAX_SCORE: i64 = 100;
const WEIGHT_LEAST_ALLOCATED: i64 = 1;
const WEIGHT_SPREAD: i64 = 2;
const WEIGHT_NODE_AFFINITY: i64 = 2;
const WEIGHT_TAINT: i64 = 3;

/// A feasible node's raw scores, before normalising across nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Raw {
    pub least_allocated: i64,
    pub owner_replicas: i64,
    pub preferred_affinity: i64,
    pub prefer_no_schedule: i64,
}

/// Maxima of the raw scores across the feasible nodes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Maxima {
    owner_replicas: i64,
    preferred_affinity: i64,
    prefer_no_schedule: i64,
}

impl Maxima {
    pub fn include(&mut self, r: &Raw) {
        self.owner_replicas = self.owner_replicas.max(r.owner_replicas);
        self.preferred_affinity = self.preferred_affinity.max(r.preferred_affinity);
        self.prefer_no_schedule = self.prefer_no_schedule.max(r.prefer_no_schedule);
    }
}

/// Raw scores of `pod` on a feasible `node`.
pub fn raw(pod: &PodInfo, pre: &PreFilter<'_>, node: &NodeInfo, data: &NodeData) -> Raw {
    Raw {
        least_allocated: least_allocated(pod, node, data),
        owner_replicas: pre.owner.map_or(0, |o| i64::from(node.owner_count(o))),
        preferred_affinity: if pod.preferred_node_affinity.is_empty() {
            0
        } else {
            pod.preferred_node_affinity
                .iter()
                .filter(|(_, t)| t.matches(&node.name, &data.labels))
                .map(|(w, _)| *w)
                .sum()
        },
        prefer_no_schedule: data
            .taints
            .iter()
            .filter(|t| t.effect == Effect::PreferNoSchedule && !tolerated(&pod.tolerations, t))
            .count() as i64,
    }
}

/// kube's LeastAllocated: the share of cpu and memory left free after placing the pod
/// (non-zero requests), averaged, 0–100.
pub fn least_allocated(pod: &PodInfo, node: &NodeInfo, data: &NodeData) -> i64 {
    let free = |alloc: i64, used: i64| -> i64 {
        if alloc <= 0 || used > alloc {
            0
        } else {
            ((alloc - used) as i128 * MAX_SCORE as i128 / alloc as i128) as i64
        }
    };
    let cpu = free(data.allocatable.cpu, node.non_zero_cpu + pod.non_zero.cpu);
    let mem = free(
        data.allocatable.memory,
        node.non_zero_memory + pod.non_zero.memory,
    );
    (cpu + mem) / 2
}

/// The weighted total of a node's normalised scores.
pub fn total(r: &Raw, m: &Maxima) -> i64 {
    let fewer_is_better = |v: i64, max: i64| {
        if max == 0 {
            MAX_SCORE
        } else {
            MAX_SCORE * (max - v) / max
        }
    };
    let more_is_better = |v: i64, max: i64| if max == 0 { 0 } else { MAX_SCORE * v / max };
    WEIGHT_LEAST_ALLOCATED * r.least_allocated
        + WEIGHT_SPREAD * fewer_is_better(r.owner_replicas, m.owner_replicas)
        + WEIGHT_NODE_AFFINITY * more_is_better(r.preferred_affinity, m.preferred_affinity)
        + WEIGHT_TAINT * fewer_is_better(r.prefer_no_schedule, m.prefer_no_schedule)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::cache::tests::{node_data, pod};
    use crate::scheduler::cache::Cache;
    use crate::scheduler::pod::tests::pod_from_json;
    use crate::scheduler::taint::Taint;
    use serde_json::json;

    fn raw_on(p: &PodInfo, c: &Cache, node: &str) -> Raw {
        let pre = PreFilter::compute(p, c);
        let n = c.node(node).unwrap();
        raw(p, &pre, n, n.data.as_ref().unwrap())
    }

    #[test]
    fn least_allocated_prefers_emptier_nodes() {
        let mut c = Cache::new();
        c.set_node("n1", node_data(1000, 1000, 10));
        c.add_bound(pod("a", 500, 250, None), "n1");
        let p = pod("p", 250, 250, None);
        // cpu (1000-750)/1000 = 25, memory (1000-500)/1000 = 50 → 37.
        assert_eq!(raw_on(&p, &c, "n1").least_allocated, 37);
        // cpu over allocatable scores 0, memory (1000-250)/1000 = 75 → 37.
        assert_eq!(
            raw_on(&pod("p", 2000, 0, None), &c, "n1").least_allocated,
            37
        );
    }

    #[test]
    fn spread_counts_replicas_of_the_same_owner() {
        let mut c = Cache::new();
        c.set_node("n1", node_data(1000, 1000, 10));
        c.set_node("n2", node_data(1000, 1000, 10));
        c.add_bound(pod("a", 0, 0, Some("rs1")), "n1");
        c.add_bound(pod("b", 0, 0, Some("rs1")), "n1");
        c.add_bound(pod("c", 0, 0, Some("rs2")), "n2");
        let p = pod("p", 0, 0, Some("rs1"));
        let (r1, r2) = (raw_on(&p, &c, "n1"), raw_on(&p, &c, "n2"));
        assert_eq!((r1.owner_replicas, r2.owner_replicas), (2, 0));
        let mut m = Maxima::default();
        m.include(&r1);
        m.include(&r2);
        assert!(total(&r2, &m) > total(&r1, &m));
        assert_eq!(
            raw_on(&pod("q", 0, 0, None), &c, "n1").owner_replicas,
            0,
            "no owner, no spread"
        );
    }

    #[test]
    fn preferred_affinity_and_prefer_no_schedule() {
        let mut c = Cache::new();
        let mut d1 = node_data(1000, 1000, 10);
        d1.labels.insert("disk".into(), "ssd".into());
        let mut d2 = node_data(1000, 1000, 10);
        d2.taints.push(Taint {
            key: "soft".into(),
            value: "".into(),
            effect: Effect::PreferNoSchedule,
        });
        c.set_node("n1", d1);
        c.set_node("n2", d2);
        let p = PodInfo::from_pod(&pod_from_json(json!({
            "metadata": {"name": "p", "uid": "p"},
            "spec": {"containers": [], "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 30, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}},
                {"weight": 5, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}}
            ]}}}
        })));
        let (r1, r2) = (raw_on(&p, &c, "n1"), raw_on(&p, &c, "n2"));
        assert_eq!((r1.preferred_affinity, r2.preferred_affinity), (35, 0));
        assert_eq!((r1.prefer_no_schedule, r2.prefer_no_schedule), (0, 1));
        let mut m = Maxima::default();
        m.include(&r1);
        m.include(&r2);
        assert_eq!(total(&r1, &m) - total(&r2, &m), 2 * 100 + 3 * 100);
    }
}
