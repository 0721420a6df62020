//! How fast nodes may be given NoExecute taints, per zone, from how many of the zone's
//! nodes are not Ready (kube's zone states and `--node-eviction-rate`).
//!
//! | zone state                                      | NoExecute taints per second   |
//! |-------------------------------------------------|-------------------------------|
//! | Normal                                          | `node_eviction_rate` (0.1)    |
//! | PartialDisruption (> 2 and ≥ 55 % not Ready)    | secondary rate (0.01) if the zone has more than 50 nodes, else 0 |
//! | FullDisruption (none Ready)                     | `node_eviction_rate`          |
//! | every zone FullDisruption                       | 0, and existing NoExecute taints are removed |
//!
//! The last row is the safety net for the control plane losing its own network: when no
//! node anywhere looks Ready the likelier cause is on our side, and evicting every pod
//! would be the worst response. When the cluster leaves that state every node gets a
//! fresh grace period.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Node;
use tokio::time::Instant;

/// A zone whose not-Ready share is at least this is partially disrupted.
const UNHEALTHY_ZONE_THRESHOLD: f64 = 0.55;
/// Zones with more nodes than this keep evicting slowly when partially disrupted.
const LARGE_CLUSTER_THRESHOLD: usize = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneState {
    Normal,
    PartialDisruption,
    FullDisruption,
}

/// The state of a zone with `ready` Ready nodes and `not_ready` others.
pub fn zone_state(ready: usize, not_ready: usize) -> ZoneState {
    if ready == 0 && not_ready > 0 {
        ZoneState::FullDisruption
    } else if not_ready > 2
        && not_ready as f64 / (ready + not_ready) as f64 >= UNHEALTHY_ZONE_THRESHOLD
    {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// The zone key of a node: `region:zone` from the topology labels (or their deprecated
/// failure-domain forms); nodes without them share the zone `""`.
pub fn zone_of(node: &Node) -> String {
    let labels = node.metadata.labels.as_ref();
    let get = |k: &str, old: &str| {
        labels
            .and_then(|l| l.get(k).or_else(|| l.get(old)))
            .cloned()
            .unwrap_or_default()
    };
    let region = get(
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/region",
    );
    let zone = get(
        "topology.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/zone",
    );
    if region.is_empty() && zone.is_empty() {
        String::new()
    } else {
        format!("{region}:{zone}")
    }
}

/// Tokens per second for a zone in `state` with `size` nodes.
pub fn zone_rate(state: ZoneState, size: usize, rate: f64, secondary_rate: f64) -> f64 {
    match state {
        ZoneState::Normal | ZoneState::FullDisruption => rate,
        ZoneState::PartialDisruption if size > LARGE_CLUSTER_THRESHOLD => secondary_rate,
        ZoneState::PartialDisruption => 0.0,
    }
}

/// A token bucket holding at most one token (kube's eviction limiter burst): the first
/// taint in a zone goes at once, the following ones one per `1/rate` seconds.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            tokens: 1.0,
            last: now,
        }
    }

    /// Changes the rate from now on; tokens already earned are kept.
    pub fn set_rate(&mut self, rate: f64, now: Instant) {
        self.refill(now);
        self.rate = rate;
    }

    /// Takes a token if one is there.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate.max(0.0)).min(1.0);
        self.last = now;
    }
}

/// What changed cluster-wide on one [`Disruption::update`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    None,
    /// Every zone just became fully disrupted: pause evictions.
    Paused,
    /// Leaving the paused state: give every node a fresh grace period.
    Resumed,
}

/// Per-zone limiters and the cluster-wide pause.
pub struct Disruption {
    rate: f64,
    secondary_rate: f64,
    buckets: HashMap<String, TokenBucket>,
    paused: bool,
}

impl Disruption {
    pub fn new(rate: f64, secondary_rate: f64) -> Disruption {
        Disruption {
            rate,
            secondary_rate,
            buckets: HashMap::new(),
            paused: false,
        }
    }

    /// Whether evictions are paused because no zone has a Ready node.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Takes in the (ready, not ready) counts of every zone and sets each zone's rate.
    pub fn update(&mut self, zones: &HashMap<String, (usize, usize)>, now: Instant) -> Transition {
        let states: HashMap<&String, ZoneState> = zones
            .iter()
            .map(|(z, (r, n))| (z, zone_state(*r, *n)))
            .collect();
        let all_full =
            !states.is_empty() && states.values().all(|s| *s == ZoneState::FullDisruption);
        self.buckets.retain(|z, _| zones.contains_key(z));
        for (zone, (ready, not_ready)) in zones {
            let rate = if all_full {
                0.0
            } else {
                zone_rate(
                    states[zone],
                    ready + not_ready,
                    self.rate,
                    self.secondary_rate,
                )
            };
            self.buckets
                .entry(zone.clone())
                .or_insert_with(|| TokenBucket::new(rate, now))
                .set_rate(rate, now);
        }
        let was = std::mem::replace(&mut self.paused, all_full);
        match (was, all_full) {
            (false, true) => Transition::Paused,
            (true, false) => Transition::Resumed,
            _ => Transition::None,
        }
    }

    /// Takes a token from `zone`'s bucket; never while paused.
    pub fn try_take(&mut self, zone: &str, now: Instant) -> bool {
        if self.paused {
            return false;
        }
        let bucket = self
            .buckets
            .entry(zone.to_string())
            .or_insert_with(|| TokenBucket::new(self.rate, now));
        bucket.try_take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    #[test]
    fn zone_states_follow_kube_thresholds() {
        assert_eq!(zone_state(0, 0), ZoneState::Normal);
        assert_eq!(zone_state(5, 0), ZoneState::Normal);
        assert_eq!(zone_state(0, 1), ZoneState::FullDisruption);
        // Two not ready is never partial, whatever the share.
        assert_eq!(zone_state(1, 2), ZoneState::Normal);
        assert_eq!(zone_state(2, 3), ZoneState::PartialDisruption);
        assert_eq!(zone_state(3, 3), ZoneState::Normal);
        assert_eq!(zone_state(9, 11), ZoneState::PartialDisruption);
    }

    #[test]
    fn rates_by_state_and_size() {
        assert_eq!(zone_rate(ZoneState::Normal, 3, 0.1, 0.01), 0.1);
        assert_eq!(zone_rate(ZoneState::FullDisruption, 3, 0.1, 0.01), 0.1);
        assert_eq!(zone_rate(ZoneState::PartialDisruption, 50, 0.1, 0.01), 0.0);
        assert_eq!(zone_rate(ZoneState::PartialDisruption, 51, 0.1, 0.01), 0.01);
    }

    #[test]
    fn token_bucket_allows_one_at_once_then_one_per_period() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0.1, t0);
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0));
        assert!(!b.try_take(t0 + Duration::from_secs(9)));
        assert!(b.try_take(t0 + Duration::from_secs(10)));
        // A long idle period does not build up a burst.
        assert!(b.try_take(t0 + Duration::from_secs(1000)));
        assert!(!b.try_take(t0 + Duration::from_secs(1001)));
        b.set_rate(0.0, t0 + Duration::from_secs(1001));
        assert!(!b.try_take(t0 + Duration::from_secs(100_000)));
    }

    #[test]
    fn zone_labels_make_the_key() {
        let mut n = Node::default();
        assert_eq!(zone_of(&n), "");
        n.metadata.labels = Some(BTreeMap::from([
            (
                "topology.kubernetes.io/region".to_string(),
                "eu".to_string(),
            ),
            (
                "failure-domain.beta.kubernetes.io/zone".to_string(),
                "a".to_string(),
            ),
        ]));
        assert_eq!(zone_of(&n), "eu:a");
    }

    #[test]
    fn all_zones_down_pauses_and_recovery_resumes() {
        let t0 = Instant::now();
        let mut d = Disruption::new(0.1, 0.01);
        let zones = |a: (usize, usize), b: (usize, usize)| {
            HashMap::from([("a".to_string(), a), ("b".to_string(), b)])
        };
        assert_eq!(d.update(&zones((3, 0), (3, 0)), t0), Transition::None);
        // One zone fully down alone keeps the normal rate.
        assert_eq!(d.update(&zones((0, 3), (3, 0)), t0), Transition::None);
        assert!(d.try_take("a", t0));
        assert_eq!(d.update(&zones((0, 3), (0, 3)), t0), Transition::Paused);
        assert!(d.paused());
        assert!(!d.try_take("b", t0 + Duration::from_secs(100)));
        assert_eq!(
            d.update(&zones((1, 2), (0, 3)), t0 + Duration::from_secs(200)),
            Transition::Resumed
        );
        assert!(!d.paused());
        assert!(d.try_take("b", t0 + Duration::from_secs(200)));
    }
}
