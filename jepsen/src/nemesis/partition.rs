//! Partition shapes as *grudges*: for every node, the nodes it must not
//! reach. Pure functions of the node count, the leader and a random source,
//! so they are testable without a network.
//!
//! ```text
//! isolate-leader (leader 2 of 5):  {2} | {1,3,4,5}
//! halves (random):                 {1,4} | {2,3,5}     minority | majority
//! bridge (5 nodes):                {1,2} - 3 - {4,5}   3 sees everyone; the
//!                                                      halves not each other
//! ```

use std::collections::BTreeSet;

use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Which partitions the partition nemesis draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionMode {
    /// Each time one of the shapes below, at random.
    Random,
    /// The current leader alone on one side.
    Leader,
    /// A random minority and majority.
    Halves,
    /// Two halves joined only through one bridge node (a "ring" cut).
    Bridge,
}

/// For node `i` (0-based), the nodes it must not reach.
pub type Grudge = Vec<BTreeSet<usize>>;

/// A partition: its grudge and a description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Who drops whom.
    pub grudge: Grudge,
    /// In words, with member names.
    pub description: String,
}

/// The grudge of disjoint components: each node drops every node outside
/// its component (nodes in no component are dropped by nobody and drop
/// nobody).
pub fn complete(n: usize, components: &[Vec<usize>]) -> Grudge {
    let mut grudge = vec![BTreeSet::new(); n];
    for (ci, comp) in components.iter().enumerate() {
        for (cj, other) in components.iter().enumerate() {
            if ci == cj {
                continue;
            }
            for &a in comp {
                for &b in other {
                    grudge[a].insert(b);
                }
            }
        }
    }
    grudge
}

fn names(nodes: &[usize], names: &[String]) -> String {
    let v: Vec<&str> = nodes.iter().map(|&i| names[i].as_str()).collect();
    format!("{{{}}}", v.join(","))
}

/// Draws a partition of `names.len()` nodes (at least 2).
pub fn draw<R: Rng>(
    mode: PartitionMode,
    leader: Option<usize>,
    node_names: &[String],
    rng: &mut R,
) -> Partition {
    let n = node_names.len();
    let mode = match mode {
        PartitionMode::Random => *[
            PartitionMode::Leader,
            PartitionMode::Halves,
            PartitionMode::Bridge,
        ]
        .choose(rng)
        .unwrap_or(&PartitionMode::Halves),
        m => m,
    };
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    match mode {
        PartitionMode::Leader => {
            let l = leader.unwrap_or(order[0]);
            let rest: Vec<usize> = (0..n).filter(|&i| i != l).collect();
            Partition {
                grudge: complete(n, &[vec![l], rest.clone()]),
                description: format!(
                    "isolate leader {} from {}",
                    node_names[l],
                    names(&rest, node_names)
                ),
            }
        }
        PartitionMode::Bridge if n >= 3 => {
            let bridge = order[0];
            let rest = &order[1..];
            let (a, b) = rest.split_at(rest.len() / 2);
            let (mut a, mut b) = (a.to_vec(), b.to_vec());
            a.sort_unstable();
            b.sort_unstable();
            Partition {
                grudge: complete(n, &[a.clone(), b.clone()]),
                description: format!(
                    "bridge: {} - {} - {}",
                    names(&a, node_names),
                    node_names[bridge],
                    names(&b, node_names)
                ),
            }
        }
        _ => {
            let (a, b) = order.split_at(n / 2);
            let (mut a, mut b) = (a.to_vec(), b.to_vec());
            a.sort_unstable();
            b.sort_unstable();
            Partition {
                grudge: complete(n, &[a.clone(), b.clone()]),
                description: format!(
                    "halves: {} | {}",
                    names(&a, node_names),
                    names(&b, node_names)
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("n{i}")).collect()
    }

    #[test]
    fn isolating_the_leader_cuts_it_from_everyone() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let p = draw(PartitionMode::Leader, Some(1), &names(3), &mut rng);
        assert_eq!(p.grudge[1], BTreeSet::from([0, 2]));
        assert_eq!(p.grudge[0], BTreeSet::from([1]));
        assert_eq!(p.grudge[2], BTreeSet::from([1]));
        assert!(p.description.contains("isolate leader n2"));
    }

    #[test]
    fn halves_leave_a_majority_and_bridges_connect_both_sides() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20 {
            let p = draw(PartitionMode::Halves, None, &names(5), &mut rng);
            let minority = p.grudge.iter().filter(|g| g.len() == 3).count();
            let majority = p.grudge.iter().filter(|g| g.len() == 2).count();
            assert_eq!((minority, majority), (2, 3), "{p:?}");
            let b = draw(PartitionMode::Bridge, None, &names(5), &mut rng);
            assert_eq!(b.grudge.iter().filter(|g| g.is_empty()).count(), 1, "{b:?}");
            // Symmetric.
            for (i, g) in b.grudge.iter().enumerate() {
                for &j in g {
                    assert!(b.grudge[j].contains(&i));
                }
            }
        }
    }
}
