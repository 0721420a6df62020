//! The taints this controller owns on a node, computed from the node's conditions.
//!
//! - NoSchedule, following the conditions at once (kube's `doNoScheduleTaintingPass`):
//!   Ready False → `not-ready`, Ready Unknown → `unreachable`, MemoryPressure /
//!   DiskPressure / NetworkUnavailable / PIDPressure True → `memory-pressure` …,
//!   `spec.unschedulable` → `unschedulable`.
//! - NoExecute, which evicts pods (see `eviction`): Ready False → `not-ready`, Unknown →
//!   `unreachable`, True → neither. Adding one to a node that has neither is rate limited
//!   per zone (see `disruption`); swapping one for the other and removing are not, as in
//!   kube. A NoExecute taint carries `timeAdded`, from which tolerations count.
//!
//! Taints other controllers or users set (any other key, or these keys with other
//! effects) are kept as they are.

use k8s_openapi::api::core::v1::{Node, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::health::Readiness;

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub const NO_SCHEDULE: &str = "NoSchedule";
pub const NO_EXECUTE: &str = "NoExecute";

/// (condition type, status, taint key) for the NoSchedule taints conditions imply.
const CONDITION_TAINTS: [(&str, &str, &str); 6] = [
    ("Ready", "False", NOT_READY),
    ("Ready", "Unknown", UNREACHABLE),
    (
        "MemoryPressure",
        "True",
        "node.kubernetes.io/memory-pressure",
    ),
    ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
    (
        "NetworkUnavailable",
        "True",
        "node.kubernetes.io/network-unavailable",
    ),
    ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
];

fn taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[])
}

fn is_managed_no_schedule(t: &Taint) -> bool {
    t.effect == NO_SCHEDULE
        && (t.key == UNSCHEDULABLE || CONDITION_TAINTS.iter().any(|(_, _, k)| *k == t.key))
}

fn is_managed_no_execute(t: &Taint) -> bool {
    t.effect == NO_EXECUTE && (t.key == UNREACHABLE || t.key == NOT_READY)
}

/// The NoExecute taint key `readiness` calls for, if any.
fn wanted_no_execute(readiness: Readiness) -> Option<&'static str> {
    match readiness {
        Readiness::True => None,
        Readiness::False => Some(NOT_READY),
        Readiness::Unknown => Some(UNREACHABLE),
    }
}

/// Whether the node needs a NoExecute taint it has none of — the one step that takes a
/// token from the zone's rate limiter. `paused`: evictions are paused cluster-wide.
///
/// `readiness` None: the node has not posted Ready yet and is within its startup grace
/// period; kube leaves such a node's NoExecute taints alone, and so does this.
pub fn needs_no_execute_added(node: &Node, readiness: Option<Readiness>, paused: bool) -> bool {
    !paused
        && readiness.and_then(wanted_no_execute).is_some()
        && !taints(node).iter().any(is_managed_no_execute)
}

/// The node's taints after applying the rules above, or `None` when they are already
/// right. `readiness` is the Ready status as this controller now knows it (Unknown right
/// after it marked the node silent; None as for [`needs_no_execute_added`]). `may_add`: a token was granted for adding a NoExecute
/// taint to a node that has none. `paused`: no NoExecute taints at all (cluster-wide
/// disruption; existing ones are removed, as kube does).
pub fn plan(
    node: &Node,
    readiness: Option<Readiness>,
    may_add: bool,
    paused: bool,
    now: Timestamp,
) -> Option<Vec<Taint>> {
    let current = taints(node);
    let mut desired_no_schedule: Vec<&str> = Vec::new();
    let conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or(&[]);
    for (type_, status, key) in CONDITION_TAINTS {
        // Ready comes from `readiness`, which may be ahead of the cached conditions.
        let matches = if type_ == "Ready" {
            conditions.iter().any(|c| c.type_ == "Ready")
                && readiness.and_then(wanted_no_execute) == Some(key)
        } else {
            conditions
                .iter()
                .any(|c| c.type_ == type_ && c.status == status)
        };
        if matches {
            desired_no_schedule.push(key);
        }
    }
    if node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        desired_no_schedule.push(UNSCHEDULABLE);
    }

    let existing_no_execute = current.iter().find(|t| is_managed_no_execute(t));
    let wanted = match readiness {
        _ if paused => None,
        Some(r) => wanted_no_execute(r),
        // No opinion yet: keep whatever is there.
        None => existing_no_execute.map(|t| t.key.as_str()),
    };
    let desired_no_execute: Option<Taint> = match (wanted, existing_no_execute) {
        (None, _) => None,
        (Some(key), Some(t)) if t.key == key => Some(t.clone()),
        // Swap: the node was already being evicted, only the reason changed.
        (Some(key), Some(_)) => Some(new_no_execute(key, now)),
        (Some(key), None) if may_add => Some(new_no_execute(key, now)),
        (Some(_), None) => None,
    };

    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| {
            if is_managed_no_schedule(t) {
                desired_no_schedule.contains(&t.key.as_str())
            } else if is_managed_no_execute(t) {
                desired_no_execute.as_ref().is_some_and(|d| d.key == t.key)
            } else {
                true
            }
        })
        .cloned()
        .collect();
    for key in desired_no_schedule {
        if !out.iter().any(|t| t.key == key && t.effect == NO_SCHEDULE) {
            out.push(Taint {
                key: key.to_string(),
                effect: NO_SCHEDULE.to_string(),
                value: None,
                time_added: None,
            });
        }
    }
    if let Some(d) = desired_no_execute {
        if !out.iter().any(|t| t.key == d.key && t.effect == NO_EXECUTE) {
            out.push(d);
        }
    }
    (out.as_slice() != current).then_some(out)
}

fn new_no_execute(key: &str, now: Timestamp) -> Taint {
    Taint {
        key: key.to_string(),
        effect: NO_EXECUTE.to_string(),
        value: None,
        time_added: Some(Time(now)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus};

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn node(conds: &[(&str, &str)], taints: Vec<Taint>, unschedulable: bool) -> Node {
        Node {
            spec: Some(NodeSpec {
                taints: Some(taints),
                unschedulable: Some(unschedulable),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(
                    conds
                        .iter()
                        .map(|(t, s)| NodeCondition {
                            type_: t.to_string(),
                            status: s.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn taint(key: &str, effect: &str, added: Option<i64>) -> Taint {
        Taint {
            key: key.to_string(),
            effect: effect.to_string(),
            value: None,
            time_added: added.map(|s| Time(ts(s))),
        }
    }

    fn keys(ts: &[Taint]) -> Vec<(String, String)> {
        ts.iter()
            .map(|t| (t.key.clone(), t.effect.clone()))
            .collect()
    }

    #[test]
    fn healthy_node_with_no_taints_needs_nothing() {
        let n = node(&[("Ready", "True")], vec![], false);
        assert!(!needs_no_execute_added(&n, Some(Readiness::True), false));
        assert_eq!(plan(&n, Some(Readiness::True), true, false, ts(100)), None);
    }

    #[test]
    fn unreachable_node_gets_no_schedule_at_once_and_no_execute_only_with_a_token() {
        let n = node(&[("Ready", "Unknown")], vec![], false);
        assert!(needs_no_execute_added(&n, Some(Readiness::Unknown), false));
        let without = plan(&n, Some(Readiness::Unknown), false, false, ts(100)).unwrap();
        assert_eq!(
            keys(&without),
            [(UNREACHABLE.to_string(), NO_SCHEDULE.to_string())]
        );
        assert_eq!(without[0].time_added, None);
        let with = plan(&n, Some(Readiness::Unknown), true, false, ts(100)).unwrap();
        assert_eq!(
            keys(&with),
            [
                (UNREACHABLE.to_string(), NO_SCHEDULE.to_string()),
                (UNREACHABLE.to_string(), NO_EXECUTE.to_string())
            ]
        );
        assert_eq!(with[1].time_added, Some(Time(ts(100))));
        // Applied: stable, and the original timeAdded is kept.
        let tainted = node(&[("Ready", "Unknown")], with, false);
        assert!(!needs_no_execute_added(
            &tainted,
            Some(Readiness::Unknown),
            false
        ));
        assert_eq!(
            plan(&tainted, Some(Readiness::Unknown), false, false, ts(500)),
            None
        );
    }

    #[test]
    fn readiness_ahead_of_the_cache_decides() {
        // The controller just wrote Ready=Unknown; its cache still says True.
        let n = node(&[("Ready", "True")], vec![], false);
        let out = plan(&n, Some(Readiness::Unknown), true, false, ts(7)).unwrap();
        assert_eq!(
            keys(&out)[0],
            (UNREACHABLE.to_string(), NO_SCHEDULE.to_string())
        );
    }

    #[test]
    fn not_ready_swaps_for_unreachable_without_a_token() {
        let n = node(
            &[("Ready", "False")],
            vec![
                taint(UNREACHABLE, NO_SCHEDULE, None),
                taint(UNREACHABLE, NO_EXECUTE, Some(10)),
            ],
            false,
        );
        assert!(!needs_no_execute_added(&n, Some(Readiness::False), false));
        let out = plan(&n, Some(Readiness::False), false, false, ts(200)).unwrap();
        assert_eq!(
            keys(&out),
            [
                (NOT_READY.to_string(), NO_SCHEDULE.to_string()),
                (NOT_READY.to_string(), NO_EXECUTE.to_string())
            ]
        );
        assert_eq!(out[1].time_added, Some(Time(ts(200))));
    }

    #[test]
    fn recovery_removes_ours_and_keeps_everything_else() {
        let n = node(
            &[("Ready", "True"), ("DiskPressure", "True")],
            vec![
                taint("dedicated", NO_SCHEDULE, None),
                taint(UNREACHABLE, NO_SCHEDULE, None),
                taint(UNREACHABLE, NO_EXECUTE, Some(10)),
                // Same key, an effect we do not manage: not ours.
                taint(UNREACHABLE, "PreferNoSchedule", None),
                taint("node.kubernetes.io/out-of-service", NO_EXECUTE, None),
            ],
            true,
        );
        let out = plan(&n, Some(Readiness::True), false, false, ts(300)).unwrap();
        assert_eq!(
            keys(&out),
            [
                ("dedicated".to_string(), NO_SCHEDULE.to_string()),
                (UNREACHABLE.to_string(), "PreferNoSchedule".to_string()),
                (
                    "node.kubernetes.io/out-of-service".to_string(),
                    NO_EXECUTE.to_string()
                ),
                (
                    "node.kubernetes.io/disk-pressure".to_string(),
                    NO_SCHEDULE.to_string()
                ),
                (UNSCHEDULABLE.to_string(), NO_SCHEDULE.to_string()),
            ]
        );
    }

    #[test]
    fn paused_evictions_remove_no_execute_but_keep_no_schedule() {
        let n = node(
            &[("Ready", "Unknown")],
            vec![
                taint(UNREACHABLE, NO_SCHEDULE, None),
                taint(UNREACHABLE, NO_EXECUTE, Some(10)),
            ],
            false,
        );
        assert!(!needs_no_execute_added(&n, Some(Readiness::Unknown), true));
        let out = plan(&n, Some(Readiness::Unknown), true, true, ts(300)).unwrap();
        assert_eq!(
            keys(&out),
            [(UNREACHABLE.to_string(), NO_SCHEDULE.to_string())]
        );
    }

    #[test]
    fn a_node_that_never_posted_ready_gets_no_ready_taint_from_conditions() {
        // As kube: the NoSchedule taints follow posted conditions only; the node is marked
        // Unknown (and then tainted) once its startup grace period is over.
        let n = node(&[], vec![], false);
        assert!(!needs_no_execute_added(&n, None, false));
        assert_eq!(plan(&n, None, true, false, ts(1)), None);
        // Not even a NoExecute taint left from before is touched until it posts or its
        // startup grace period ends.
        let tainted = node(&[], vec![taint(UNREACHABLE, NO_EXECUTE, Some(1))], false);
        assert_eq!(plan(&tainted, None, true, false, ts(1)), None);
    }
}
