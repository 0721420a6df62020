//! Node IPAM: gives each Node without `spec.podCIDR` its own subnet of the cluster's pod
//! network (kube's range allocator, IPv4).
//!
//! The cluster CIDR is cut into subnets of `node_cidr_mask_size` bits, numbered in address
//! order:
//!
//! ```text
//!   10.244.0.0/16, /24 subnets:  #0 10.244.0.0/24   #1 10.244.1.0/24 … #255 10.244.255.0/24
//! ```
//!
//! Every pass rebuilds the set of taken subnets from all nodes in the cache plus the
//! assignments this controller made that the cache does not show yet, then hands free
//! subnets to nodes without one, in one sequential loop — so no subnet goes to two nodes.
//! A deleted node's subnet is free again on the next pass. Free subnets are searched from
//! just after the last one assigned (round robin, as kube), so a subnet just freed is not
//! handed out again at once while traffic for the old node may still be in flight.
//!
//! A node whose podCIDR lies outside the cluster CIDR, has another size, or collides with
//! another node's is left as it is, with a Warning event `CIDRNotAvailable`; so is a node
//! that finds the range exhausted — it gets one when a node is deleted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::Context;

/// Subnet counts are limited as in kube (cluster prefix and node mask at most 16 apart).
const MAX_SUBNET_BITS: u8 = 16;
/// Wait before a pass after a failed write.
const RETRY: Duration = Duration::from_secs(5);

/// An IPv4 network, address bits below the prefix zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Cidr {
    addr: u32,
    prefix: u8,
}

/// Why a CIDR could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("invalid CIDR {0:?}")]
    Invalid(String),
    #[error("{0} is not inside the cluster CIDR {1}")]
    Outside(String, Ipv4Cidr),
    #[error("{0} is not a /{1} subnet of the cluster CIDR")]
    WrongSize(String, u8),
    #[error("node mask /{mask} does not fit cluster CIDR {cluster} (must be /{min}../{max})")]
    BadMask {
        cluster: Ipv4Cidr,
        mask: u8,
        min: u8,
        max: u8,
    },
}

impl Ipv4Cidr {
    /// Parses `a.b.c.d/n`; host bits must be zero.
    pub fn parse(s: &str) -> Result<Ipv4Cidr, CidrError> {
        let bad = || CidrError::Invalid(s.to_string());
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        let addr = u32::from(addr);
        if addr & !mask(prefix) != 0 {
            return Err(bad());
        }
        Ok(Ipv4Cidr { addr, prefix })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

/// The cluster CIDR cut into equal subnets.
#[derive(Clone, Debug)]
pub struct Subnets {
    cluster: Ipv4Cidr,
    mask: u8,
}

impl Subnets {
    /// # Errors
    /// [`CidrError::Invalid`] for a bad cluster CIDR, [`CidrError::BadMask`] when the node
    /// mask is shorter than the cluster prefix, longer than /32, or more than 16 bits
    /// longer.
    pub fn new(cluster: &str, mask: u8) -> Result<Subnets, CidrError> {
        let cluster = Ipv4Cidr::parse(cluster)?;
        let max = (cluster.prefix + MAX_SUBNET_BITS).min(32);
        if mask < cluster.prefix || mask > max {
            return Err(CidrError::BadMask {
                cluster,
                mask,
                min: cluster.prefix,
                max,
            });
        }
        Ok(Subnets { cluster, mask })
    }

    /// How many subnets there are.
    pub fn count(&self) -> u32 {
        1u32 << (self.mask - self.cluster.prefix)
    }

    /// Subnet number `i` (< count).
    pub fn cidr(&self, i: u32) -> String {
        let step = if self.mask == 0 {
            0
        } else {
            1u64 << (32 - self.mask)
        };
        let addr = (self.cluster.addr as u64 + i as u64 * step) as u32;
        Ipv4Cidr {
            addr,
            prefix: self.mask,
        }
        .to_string()
    }

    /// The number of the subnet `cidr` names.
    ///
    /// # Errors
    /// `Invalid`, `Outside` (not within the cluster CIDR) or `WrongSize` (another prefix).
    pub fn index(&self, cidr: &str) -> Result<u32, CidrError> {
        let c = Ipv4Cidr::parse(cidr)?;
        if c.addr & mask(self.cluster.prefix) != self.cluster.addr {
            return Err(CidrError::Outside(cidr.to_string(), self.cluster));
        }
        if c.prefix != self.mask {
            return Err(CidrError::WrongSize(cidr.to_string(), self.mask));
        }
        let offset = c.addr - self.cluster.addr;
        Ok(if self.mask == 0 {
            0
        } else {
            (offset as u64 >> (32 - self.mask)) as u32
        })
    }
}

/// A node as the allocator sees it: its IPv4 pod CIDR, if it has one (IPv6 ones are not
/// this allocator's business).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCidr {
    pub name: String,
    pub cidr: Option<String>,
}

impl NodeCidr {
    pub fn of(node: &Node) -> NodeCidr {
        let spec = node.spec.as_ref();
        let mut all: Vec<&String> = spec
            .and_then(|s| s.pod_cidrs.as_ref())
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        if let Some(c) = spec.and_then(|s| s.pod_cidr.as_ref()) {
            all.push(c);
        }
        NodeCidr {
            name: node.name_any(),
            cidr: all
                .into_iter()
                .find(|c| !c.is_empty() && !c.contains(':'))
                .cloned(),
        }
    }
}

/// One decision of an allocation pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Give `node` this CIDR.
    Assign { node: String, cidr: String },
    /// `node`'s CIDR cannot be used (outside, wrong size, or taken by another node).
    Unusable { node: String, reason: String },
    /// No free subnet for `node`.
    Exhausted { node: String },
}

/// One allocation pass over `nodes` (every node in the cache, with the CIDRs assigned but
/// not yet seen filled in). Nodes are taken in name order so that of two nodes claiming
/// one subnet the same one keeps it on every pass. `next` is where the search for a free
/// subnet starts; it is advanced past each subnet assigned.
pub fn allocate(subnets: &Subnets, nodes: &[NodeCidr], next: &mut u32) -> Vec<Decision> {
    let mut sorted: Vec<&NodeCidr> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut used: HashMap<u32, &str> = HashMap::new();
    let mut out = Vec::new();
    for n in &sorted {
        let Some(cidr) = &n.cidr else { continue };
        match subnets.index(cidr) {
            Ok(i) => match used.get(&i) {
                Some(owner) => out.push(Decision::Unusable {
                    node: n.name.clone(),
                    reason: format!("{cidr} is already the podCIDR of node {owner}"),
                }),
                None => {
                    used.insert(i, &n.name);
                }
            },
            Err(e) => out.push(Decision::Unusable {
                node: n.name.clone(),
                reason: e.to_string(),
            }),
        }
    }
    let count = subnets.count();
    for n in sorted.iter().filter(|n| n.cidr.is_none()) {
        let found = (0..count)
            .map(|k| (*next + k) % count)
            .find(|i| !used.contains_key(i));
        match found {
            Some(i) => {
                used.insert(i, &n.name);
                *next = (i + 1) % count;
                out.push(Decision::Assign {
                    node: n.name.clone(),
                    cidr: subnets.cidr(i),
                });
            }
            None => out.push(Decision::Exhausted {
                node: n.name.clone(),
            }),
        }
    }
    out
}

/// Runs node IPAM until the task is aborted; returns at once when `cluster_cidr` is None.
///
/// # Errors
/// An unusable `cluster_cidr` / `node_cidr_mask_size`.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let Some(cluster) = ctx.settings.cluster_cidr.clone() else {
        tracing::info!("no cluster CIDR: node IPAM off");
        return Ok(());
    };
    let subnets = Subnets::new(&cluster, ctx.settings.node_cidr_mask_size)?;
    let api: Api<Node> = Api::all(ctx.client.clone());
    let (store, writer) = reflector::store();
    let mut events = reflector::reflector(writer, watcher(api.clone(), watcher::Config::default()))
        .default_backoff()
        .boxed();
    let mut state = Ipam {
        subnets,
        next: 0,
        pending: HashMap::new(),
        warned: HashSet::new(),
    };
    let mut synced = false;
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        let mut pass = tokio::select! {
            ev = events.next() => match ev {
                Some(ev) => state.wants_pass(ev, &mut synced),
                None => anyhow::bail!("node watch ended"),
            },
            _ = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)), if retry_at.is_some() => {
                retry_at = None;
                true
            }
        };
        // A burst of registrations is one pass, not one per event: each pass looks at
        // every node.
        while let Some(Some(ev)) = events.next().now_or_never() {
            pass |= state.wants_pass(ev, &mut synced);
        }
        if pass && !state.pass(&ctx, &api, &store).await {
            retry_at = Some(tokio::time::Instant::now() + RETRY);
        }
    }
}

struct Ipam {
    subnets: Subnets,
    next: u32,
    /// CIDRs written that the cache may not show yet: node name → (uid, cidr).
    pending: HashMap<String, (String, String)>,
    /// (node, reason) pairs already reported, so a pass does not repeat events.
    warned: HashSet<(String, String)>,
}

impl Ipam {
    /// Whether a watch event calls for a pass (once the first list is in): a node
    /// without a podCIDR appeared or changed, one of ours is not in the cache yet, or a
    /// node went away (its subnet is free).
    fn wants_pass(
        &self,
        ev: Result<watcher::Event<Node>, watcher::Error>,
        synced: &mut bool,
    ) -> bool {
        let relevant = match &ev {
            Ok(watcher::Event::InitDone) => {
                *synced = true;
                true
            }
            Ok(watcher::Event::Apply(n)) => {
                NodeCidr::of(n).cidr.is_none() || self.pending.contains_key(&n.name_any())
            }
            Ok(watcher::Event::Delete(_)) => true,
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => false,
            Err(e) => {
                tracing::warn!(error = %e, "node watch failed; retrying");
                false
            }
        };
        *synced && relevant
    }

    /// One pass: allocate and write. Returns false when a write failed (retry later).
    async fn pass(&mut self, ctx: &Context, api: &Api<Node>, store: &Store<Node>) -> bool {
        let nodes: BTreeMap<String, std::sync::Arc<Node>> = store
            .state()
            .into_iter()
            .map(|n| (n.name_any(), n))
            .collect();
        // Forget pending assignments the cache now shows, or whose node is gone/replaced.
        self.pending.retain(|name, (uid, _)| {
            nodes.get(name).is_some_and(|n| {
                n.uid().as_deref() == Some(uid.as_str()) && NodeCidr::of(n).cidr.is_none()
            })
        });
        let view: Vec<NodeCidr> = nodes
            .values()
            .map(|n| {
                let mut c = NodeCidr::of(n);
                if c.cidr.is_none() {
                    c.cidr = self.pending.get(&c.name).map(|(_, cidr)| cidr.clone());
                }
                c
            })
            .collect();
        self.warned.retain(|(name, _)| nodes.contains_key(name));
        let mut ok = true;
        for d in allocate(&self.subnets, &view, &mut self.next) {
            match d {
                Decision::Assign { node, cidr } => {
                    let Some(n) = nodes.get(&node) else { continue };
                    // No resourceVersion precondition: the node's status and taints
                    // change all the time (heartbeats, the lifecycle controller), and a
                    // stale cache would turn every write into a conflict. The API server
                    // refuses to change a podCIDR once set (422), which is the guard.
                    let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
                    match api
                        .patch(&node, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(_) => {
                            tracing::info!(node = %node, cidr = %cidr, "assigned podCIDR");
                            self.pending
                                .insert(node.clone(), (n.uid().unwrap_or_default(), cidr));
                        }
                        // Gone, or it has a podCIDR already (the cache will show it).
                        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 422 => {
                            tracing::debug!(node = %node, error = %e, "podCIDR not assigned");
                        }
                        Err(e) => {
                            tracing::warn!(node = %node, error = %e, "assigning podCIDR failed; retrying");
                            ok = false;
                        }
                    }
                }
                Decision::Unusable { node, reason } => {
                    if let Some(n) = nodes.get(&node) {
                        if self.warned.insert((node.clone(), reason.clone())) {
                            ctx.events.warning(
                                n.as_ref(),
                                "CIDRNotAvailable",
                                format!("Node {node} has a podCIDR that cannot be used: {reason}"),
                            );
                        }
                    }
                }
                Decision::Exhausted { node } => {
                    if let Some(n) = nodes.get(&node) {
                        if self.warned.insert((node.clone(), "exhausted".to_string())) {
                            tracing::warn!(node = %node, "pod CIDR range exhausted");
                            ctx.events.warning(
                                n.as_ref(),
                                "CIDRNotAvailable",
                                format!(
                                    "Node {node} status is now: CIDRNotAvailable (no free /{} left in the cluster CIDR)",
                                    self.subnets.mask
                                ),
                            );
                        }
                    }
                }
            }
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(name: &str, cidr: Option<&str>) -> NodeCidr {
        NodeCidr {
            name: name.to_string(),
            cidr: cidr.map(str::to_string),
        }
    }

    fn assigned(ds: &[Decision]) -> Vec<(String, String)> {
        ds.iter()
            .filter_map(|d| match d {
                Decision::Assign { node, cidr } => Some((node.clone(), cidr.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn subnets_number_the_cluster_cidr() {
        let s = Subnets::new("10.244.0.0/16", 24).unwrap();
        assert_eq!(s.count(), 256);
        assert_eq!(s.cidr(0), "10.244.0.0/24");
        assert_eq!(s.cidr(255), "10.244.255.0/24");
        assert_eq!(s.index("10.244.7.0/24"), Ok(7));
        assert!(matches!(
            s.index("10.245.0.0/24"),
            Err(CidrError::Outside(..))
        ));
        assert!(matches!(
            s.index("10.244.0.0/25"),
            Err(CidrError::WrongSize(..))
        ));
        assert!(matches!(
            s.index("10.244.0.1/24"),
            Err(CidrError::Invalid(..))
        ));
        assert!(matches!(s.index("nonsense"), Err(CidrError::Invalid(..))));
        assert!(Subnets::new("10.244.0.0/16", 15).is_err());
        assert!(Subnets::new("10.0.0.0/8", 25).is_err());
        assert!(Subnets::new("10.0.0.0/8", 24).is_ok());
        assert!(Subnets::new("10.244.0.1/16", 24).is_err());
        let whole = Subnets::new("0.0.0.0/0", 16).unwrap();
        assert_eq!(whole.cidr(65535), "255.255.0.0/16");
    }

    #[test]
    fn new_nodes_get_distinct_free_subnets() {
        let s = Subnets::new("10.0.0.0/16", 24).unwrap();
        let mut next = 0;
        let nodes = [
            n("a", Some("10.0.0.0/24")),
            n("b", None),
            n("c", Some("10.0.1.0/24")),
            n("d", None),
        ];
        let ds = allocate(&s, &nodes, &mut next);
        assert_eq!(
            assigned(&ds),
            [
                ("b".to_string(), "10.0.2.0/24".to_string()),
                ("d".to_string(), "10.0.3.0/24".to_string())
            ]
        );
        assert_eq!(next, 4);
    }

    #[test]
    fn exhaustion_then_reuse_after_a_node_is_deleted() {
        // A /30 of /31s: two subnets.
        let s = Subnets::new("10.0.0.0/30", 31).unwrap();
        let mut next = 0;
        let ds = allocate(&s, &[n("a", None), n("b", None), n("c", None)], &mut next);
        assert_eq!(assigned(&ds).len(), 2);
        assert_eq!(
            ds[2],
            Decision::Exhausted {
                node: "c".to_string()
            }
        );
        // "a" is deleted: its subnet goes to "c".
        let ds = allocate(&s, &[n("b", Some("10.0.0.2/31")), n("c", None)], &mut next);
        assert_eq!(
            assigned(&ds),
            [("c".to_string(), "10.0.0.0/31".to_string())]
        );
    }

    #[test]
    fn search_continues_after_the_last_assignment() {
        let s = Subnets::new("10.0.0.0/16", 24).unwrap();
        let mut next = 5;
        let ds = allocate(&s, &[n("x", Some("10.0.5.0/24")), n("y", None)], &mut next);
        assert_eq!(
            assigned(&ds),
            [("y".to_string(), "10.0.6.0/24".to_string())]
        );
        // Wraps around.
        let mut next = 255;
        let ds = allocate(
            &s,
            &[n("x", Some("10.0.255.0/24")), n("y", None)],
            &mut next,
        );
        assert_eq!(
            assigned(&ds),
            [("y".to_string(), "10.0.0.0/24".to_string())]
        );
    }

    #[test]
    fn unusable_cidrs_are_reported_and_not_taken_over() {
        let s = Subnets::new("10.0.0.0/16", 24).unwrap();
        let mut next = 0;
        let ds = allocate(
            &s,
            &[
                n("b", Some("10.0.0.0/24")),
                n("a", Some("10.0.0.0/24")),
                n("c", Some("192.168.0.0/24")),
                n("d", None),
            ],
            &mut next,
        );
        // "a" sorts first and keeps the subnet; "b" collides.
        assert!(ds.contains(&Decision::Unusable {
            node: "b".to_string(),
            reason: "10.0.0.0/24 is already the podCIDR of node a".to_string()
        }));
        assert!(ds
            .iter()
            .any(|d| matches!(d, Decision::Unusable { node, .. } if node == "c")));
        // "d" does not get the colliding subnet.
        assert_eq!(
            assigned(&ds),
            [("d".to_string(), "10.0.1.0/24".to_string())]
        );
    }

    #[test]
    fn node_cidr_reads_ipv4_from_either_field() {
        let mut node = Node::default();
        node.metadata.name = Some("a".into());
        assert_eq!(NodeCidr::of(&node).cidr, None);
        node.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            pod_cidrs: Some(vec!["fd00::/64".into(), "10.0.3.0/24".into()]),
            ..Default::default()
        });
        assert_eq!(NodeCidr::of(&node).cidr.as_deref(), Some("10.0.3.0/24"));
        node.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            pod_cidr: Some("10.0.4.0/24".into()),
            ..Default::default()
        });
        assert_eq!(NodeCidr::of(&node).cidr.as_deref(), Some("10.0.4.0/24"));
    }
}
