//! Node heartbeats as this controller observes them, and what a silent node's status
//! becomes.
//!
//! A node agent proves it is alive two ways: renewing its Lease (`kube-node-lease/<node>`,
//! every 10 s) and posting its Ready condition with a new `lastHeartbeatTime`. Both
//! timestamps come from the agent's clock, so they are never compared with ours: what
//! counts is *when we saw one of them change* (kube's `probeTimestamp`). A node is silent
//! once no change was seen for the grace period.
//!
//! ```text
//!   agent:   renew ─────── renew ─────── (crash)
//!   we see:    └─ probe=t0    └─ probe=t1             t1+grace: silent → Unknown
//! ```
//!
//! A node first seen (controller start, new leader, new node) starts its clock at that
//! moment, so a freshly elected controller gives every node a full grace period before it
//! calls any of them silent.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;

/// The conditions a silent node's are set to Unknown (NetworkUnavailable is left alone:
/// the network plugin, not the agent, owns it — as in kube).
pub const AGENT_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// The status of a node's Ready condition; a missing condition reads as Unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    True,
    False,
    Unknown,
}

impl Readiness {
    pub fn of(node: &Node) -> Readiness {
        match condition(node, "Ready").map(|c| c.status.as_str()) {
            Some("True") => Readiness::True,
            Some("False") => Readiness::False,
            _ => Readiness::Unknown,
        }
    }
}

/// The node's condition of type `type_`.
pub fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The agent's two heartbeat timestamps as last read from the API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// `lastHeartbeatTime` of the Ready condition.
    pub ready: Option<Timestamp>,
    /// `spec.renewTime` of the node's Lease.
    pub lease: Option<Timestamp>,
}

impl Heartbeat {
    pub fn of(node: &Node, lease_renew: Option<Timestamp>) -> Heartbeat {
        Heartbeat {
            ready: condition(node, "Ready")
                .and_then(|c| c.last_heartbeat_time.as_ref())
                .map(|t| t.0),
            lease: lease_renew,
        }
    }
}

/// What this controller knows about one node's liveness.
#[derive(Clone, Debug)]
pub struct NodeHealth {
    last: Heartbeat,
    /// When a heartbeat change was last observed, on our clock.
    probe: Instant,
}

impl NodeHealth {
    /// A node seen for the first time: its clock starts now.
    pub fn first_seen(heartbeat: Heartbeat, now: Instant) -> NodeHealth {
        NodeHealth {
            last: heartbeat,
            probe: now,
        }
    }

    /// Records the heartbeats read now. A changed Ready heartbeat or a newer Lease renewal
    /// restarts the clock; an older renewal (a Lease recreated by a skewed agent, a stale
    /// read) does not. Returns whether the clock restarted.
    pub fn observe(&mut self, heartbeat: Heartbeat, now: Instant) -> bool {
        let ready_changed = heartbeat.ready.is_some() && heartbeat.ready != self.last.ready;
        let lease_renewed = heartbeat.lease > self.last.lease;
        self.last.ready = heartbeat.ready;
        if lease_renewed {
            self.last.lease = heartbeat.lease;
        }
        if ready_changed || lease_renewed {
            self.probe = now;
        }
        ready_changed || lease_renewed
    }

    /// Restarts the clock without a heartbeat (leaving a cluster-wide disruption, when
    /// every node gets a fresh grace period as in kube).
    pub fn reset(&mut self, now: Instant) {
        self.probe = now;
    }

    /// Whether no heartbeat change was seen for longer than `grace`.
    pub fn is_silent(&self, now: Instant, grace: Duration) -> bool {
        now.saturating_duration_since(self.probe) > grace
    }

    /// When the node becomes silent if nothing changes.
    pub fn silent_at(&self, grace: Duration) -> Instant {
        self.probe + grace
    }
}

/// The grace period for `node`: a node that never posted Ready gets the (longer) startup
/// grace period, since its agent may still be starting.
pub fn grace_period(node: &Node, monitor_grace: Duration, startup_grace: Duration) -> Duration {
    if condition(node, "Ready").is_some() {
        monitor_grace
    } else {
        startup_grace
    }
}

/// The agent conditions of a silent node as they must be written: each of
/// [`AGENT_CONDITIONS`] not already Unknown becomes Unknown (reason `NodeStatusUnknown`,
/// lastTransitionTime `now`, lastHeartbeatTime kept); a missing one is added as Unknown
/// `NodeStatusNeverUpdated`. Returns only the conditions that change — empty when the
/// status is already as it should be.
pub fn silent_conditions(node: &Node, now: Timestamp) -> Vec<NodeCondition> {
    let created = node.metadata.creation_timestamp.clone();
    let mut out = Vec::new();
    for type_ in AGENT_CONDITIONS {
        match condition(node, type_) {
            None => out.push(NodeCondition {
                type_: type_.to_string(),
                status: "Unknown".to_string(),
                reason: Some("NodeStatusNeverUpdated".to_string()),
                message: Some("Kubelet never posted node status.".to_string()),
                last_heartbeat_time: created.clone(),
                last_transition_time: Some(Time(now)),
            }),
            Some(c) if c.status != "Unknown" => out.push(NodeCondition {
                status: "Unknown".to_string(),
                reason: Some("NodeStatusUnknown".to_string()),
                message: Some("Kubelet stopped posting node status.".to_string()),
                last_transition_time: Some(Time(now)),
                ..c.clone()
            }),
            Some(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeStatus;

    const GRACE: Duration = Duration::from_secs(50);

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn cond(type_: &str, status: &str, heartbeat: i64) -> NodeCondition {
        NodeCondition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: Some("KubeletReady".to_string()),
            message: Some("ok".to_string()),
            last_heartbeat_time: Some(Time(ts(heartbeat))),
            last_transition_time: Some(Time(ts(1))),
        }
    }

    fn node(conditions: Vec<NodeCondition>) -> Node {
        Node {
            status: Some(NodeStatus {
                conditions: Some(conditions),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_node_first_seen_gets_a_full_grace_period_whatever_its_timestamps_say() {
        let t0 = Instant::now();
        // Heartbeats an hour old on the agent's clock (or a skewed clock) do not matter.
        let h = NodeHealth::first_seen(
            Heartbeat {
                ready: Some(ts(10)),
                lease: Some(ts(10)),
            },
            t0,
        );
        assert!(!h.is_silent(t0 + Duration::from_secs(49), GRACE));
        assert!(!h.is_silent(t0 + GRACE, GRACE));
        assert!(h.is_silent(t0 + Duration::from_secs(51), GRACE));
        assert_eq!(h.silent_at(GRACE), t0 + GRACE);
    }

    #[test]
    fn lease_renewals_keep_the_node_alive_and_stale_reads_do_not() {
        let t0 = Instant::now();
        let hb = |lease| Heartbeat {
            ready: Some(ts(100)),
            lease: Some(ts(lease)),
        };
        let mut h = NodeHealth::first_seen(hb(100), t0);
        assert!(h.observe(hb(110), t0 + Duration::from_secs(40)));
        assert!(!h.is_silent(t0 + Duration::from_secs(89), GRACE));
        // The same renewal seen again, or an older one, is not a heartbeat.
        assert!(!h.observe(hb(110), t0 + Duration::from_secs(80)));
        assert!(!h.observe(hb(50), t0 + Duration::from_secs(85)));
        assert!(h.is_silent(t0 + Duration::from_secs(91), GRACE));
        // A newer one after the older read still counts (the older one was not kept).
        assert!(h.observe(hb(111), t0 + Duration::from_secs(95)));
        assert!(!h.is_silent(t0 + Duration::from_secs(140), GRACE));
    }

    #[test]
    fn a_changed_ready_heartbeat_alone_keeps_the_node_alive() {
        let t0 = Instant::now();
        let hb = |ready| Heartbeat {
            ready: Some(ts(ready)),
            lease: None,
        };
        let mut h = NodeHealth::first_seen(hb(100), t0);
        // Any change counts, even backwards: the agent's clock is its own business.
        assert!(h.observe(hb(90), t0 + Duration::from_secs(30)));
        assert!(!h.is_silent(t0 + Duration::from_secs(79), GRACE));
        // The Ready condition vanishing is not a heartbeat.
        assert!(!h.observe(Heartbeat::default(), t0 + Duration::from_secs(40)));
        h.reset(t0 + Duration::from_secs(100));
        assert!(!h.is_silent(t0 + Duration::from_secs(150), GRACE));
    }

    #[test]
    fn grace_period_is_the_startup_one_until_ready_is_posted() {
        let startup = Duration::from_secs(60);
        assert_eq!(grace_period(&node(vec![]), GRACE, startup), startup);
        assert_eq!(
            grace_period(&node(vec![cond("Ready", "False", 5)]), GRACE, startup),
            GRACE
        );
    }

    #[test]
    fn silent_node_conditions_become_unknown_keeping_their_heartbeat() {
        let n = node(vec![
            cond("Ready", "True", 5),
            cond("MemoryPressure", "False", 5),
            cond("DiskPressure", "Unknown", 5),
            cond("NetworkUnavailable", "False", 5),
        ]);
        let now = ts(1000);
        let out = silent_conditions(&n, now);
        let types: Vec<&str> = out.iter().map(|c| c.type_.as_str()).collect();
        // DiskPressure is already Unknown; NetworkUnavailable is not the agent's.
        assert_eq!(types, ["Ready", "MemoryPressure", "PIDPressure"]);
        let ready = &out[0];
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            ready.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        assert_eq!(ready.last_heartbeat_time, Some(Time(ts(5))));
        assert_eq!(ready.last_transition_time, Some(Time(now)));
        let pid = &out[2];
        assert_eq!(pid.reason.as_deref(), Some("NodeStatusNeverUpdated"));
        assert_eq!(pid.status, "Unknown");

        // Once written, nothing more to write.
        let mut all = n.status.clone().unwrap().conditions.unwrap();
        for c in out {
            match all.iter_mut().find(|x| x.type_ == c.type_) {
                Some(x) => *x = c,
                None => all.push(c),
            }
        }
        assert!(silent_conditions(&node(all), ts(2000)).is_empty());
    }

    #[test]
    fn readiness_reads_a_missing_condition_as_unknown() {
        assert_eq!(Readiness::of(&node(vec![])), Readiness::Unknown);
        assert_eq!(
            Readiness::of(&node(vec![cond("Ready", "True", 1)])),
            Readiness::True
        );
        assert_eq!(
            Readiness::of(&node(vec![cond("Ready", "False", 1)])),
            Readiness::False
        );
    }
}
