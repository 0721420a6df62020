//! The cluster under test: the members on a testbed, an admin client per
//! member, and what the nemeses need to know about them (who leads, who is
//! a member) and do to them (membership changes).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::client::Client;
use crate::member::{Member, CLIENT_PORT};
use crate::target::{ClusterState, Target};
use crate::testbed::Testbed;

/// The members and how to (re)start them.
#[derive(Debug)]
pub struct Cluster {
    /// The members, in host order.
    pub members: Vec<Member>,
    /// What they run.
    pub target: Target,
    token: String,
    admin: Vec<Client>,
}

impl Cluster {
    /// Starts one member per host of `bed` as a new cluster, data dirs in
    /// `data_root/<name>`, logs in `log_root/<name>.log`, and waits (at
    /// most `timeout`) until it is healthy.
    ///
    /// # Errors
    /// If a member cannot be started or the cluster is not healthy in time.
    pub async fn start(
        bed: &Testbed,
        target: Target,
        data_root: &Path,
        log_root: &Path,
        timeout: Duration,
    ) -> Result<Cluster> {
        let members: Vec<Member> = bed
            .hosts
            .iter()
            .map(|h| {
                Member::new(
                    h.clone(),
                    data_root.join(&h.name),
                    log_root.join(format!("{}.log", h.name)),
                )
            })
            .collect();
        let admin = bed
            .hosts
            .iter()
            .map(|h| Client::new(h.addr, CLIENT_PORT, Duration::from_secs(5)))
            .collect();
        let mut cluster = Cluster {
            members,
            target,
            token: format!("sjp-{}", bed.slot()),
            admin,
        };
        let initial = cluster.initial_cluster(None);
        for i in 0..cluster.members.len() {
            let (target, token) = (cluster.target.clone(), cluster.token.clone());
            cluster.members[i].start(&target, &initial, ClusterState::New, &token)?;
        }
        cluster.wait_healthy(timeout).await?;
        Ok(cluster)
    }

    /// `name=peer-url,…` of every member (or those in `only`).
    fn initial_cluster(&self, only: Option<&[String]>) -> String {
        self.members
            .iter()
            .filter(|m| only.is_none_or(|names| names.iter().any(|n| n == m.name())))
            .map(|m| format!("{}={}", m.name(), m.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// An admin client (5 s timeout) of member `i`.
    pub fn admin(&self, i: usize) -> &Client {
        &self.admin[i]
    }

    /// Member names.
    pub fn names(&self) -> Vec<String> {
        self.members.iter().map(|m| m.name().to_owned()).collect()
    }

    /// Waits until every running member reports the same leader and a
    /// linearizable read succeeds through each of them.
    ///
    /// # Errors
    /// If that does not happen within `timeout`.
    pub async fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no member answered");
        while Instant::now() < deadline {
            match self.check_health().await {
                Ok(()) => return Ok(()),
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let state = self.describe_members();
        bail!("cluster not healthy after {timeout:?}: {last}\n{state}")
    }

    /// What a person needs to see when the cluster will not come up: for
    /// every member whether its process runs, whether its client port
    /// accepts a TCP connection from the bridge, and its log's last lines.
    fn describe_members(&mut self) -> String {
        let mut out = String::new();
        for m in &mut self.members {
            let running = m.is_running();
            let addr = std::net::SocketAddr::from((m.host.addr, CLIENT_PORT));
            let connect = match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            {
                Ok(_) => "accepts connections".to_owned(),
                Err(e) => format!("connect: {e}"),
            };
            let log = std::fs::read_to_string(&m.log_path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(12)..].join("\n    ");
            out.push_str(&format!(
                "  {} ({}) pid {:?} running {running}, {addr} {connect}; log {}:\n    {tail}\n",
                m.name(),
                m.host.netns,
                m.pid(),
                m.log_path.display(),
            ));
        }
        out
    }

    async fn check_health(&mut self) -> Result<()> {
        let mut leaders = Vec::new();
        for i in 0..self.members.len() {
            if !self.members[i].is_running() || self.members[i].is_paused() {
                continue;
            }
            let admin = self.admin[i].with_timeout(Duration::from_secs(2));
            let status = admin
                .status()
                .await
                .with_context(|| format!("status of {}", self.members[i].name()))?;
            if status.leader == 0 {
                bail!("{} knows no leader", self.members[i].name());
            }
            leaders.push(status.leader);
            admin
                .get("/sjp/health")
                .await
                .with_context(|| format!("read through {}", self.members[i].name()))?;
        }
        if leaders.is_empty() {
            bail!("no member is running");
        }
        if leaders.windows(2).any(|w| w[0] != w[1]) {
            bail!("members disagree on the leader: {leaders:x?}");
        }
        Ok(())
    }

    /// Member ids by member index, from each running member's status.
    pub async fn member_ids(&mut self) -> BTreeMap<u64, usize> {
        let mut ids = BTreeMap::new();
        for i in 0..self.members.len() {
            if !self.members[i].is_running() || self.members[i].is_paused() {
                continue;
            }
            let admin = self.admin[i].with_timeout(Duration::from_secs(1));
            if let Ok(s) = admin.status().await {
                if let Some(h) = s.header {
                    ids.insert(h.member_id, i);
                }
            }
        }
        ids
    }

    /// The index of the member most running members report as leader.
    pub async fn leader(&mut self) -> Option<usize> {
        let ids = self.member_ids().await;
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for &i in ids.values() {
            let admin = self.admin[i].with_timeout(Duration::from_secs(1));
            if let Ok(s) = admin.status().await {
                if s.leader != 0 {
                    *votes.entry(s.leader).or_default() += 1;
                }
            }
        }
        let (leader, _) = votes.into_iter().max_by_key(|&(_, n)| n)?;
        ids.get(&leader).copied()
    }

    /// Removes member `i` through another member's Cluster API, kills it
    /// and wipes its data dir.
    ///
    /// # Errors
    /// If no other member can remove it.
    pub async fn remove_member(&mut self, i: usize) -> Result<()> {
        let name = self.members[i].name().to_owned();
        let mut last = None;
        for j in (0..self.members.len()).filter(|&j| j != i) {
            let list = match self.admin[j].member_list().await {
                Ok(list) => list,
                Err(e) => {
                    last = Some(anyhow::anyhow!("member list via {j}: {e}"));
                    continue;
                }
            };
            let Some(m) = list
                .iter()
                .find(|m| m.name == name || m.peer_ur_ls.contains(&self.members[i].peer_url()))
            else {
                // Already gone (a removal whose answer was lost).
                last = None;
                break;
            };
            match self.admin[j].member_remove(m.id).await {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(anyhow::anyhow!("remove {name} via {j}: {e}")),
            }
        }
        if let Some(e) = last {
            return Err(e);
        }
        self.members[i].kill().await?;
        self.members[i].wipe()?;
        Ok(())
    }

    /// Adds member `i` back as a fresh member (empty data dir) through
    /// another member and starts it with `--initial-cluster-state existing`.
    ///
    /// # Errors
    /// If no other member can add it, or it cannot be started.
    pub async fn add_member(&mut self, i: usize) -> Result<()> {
        let peer_url = self.members[i].peer_url();
        let mut added = None;
        let mut last = String::new();
        for j in (0..self.members.len()).filter(|&j| j != i) {
            if !self.members[j].is_running() {
                continue;
            }
            // Already there (an add whose answer was lost)?
            if let Ok(list) = self.admin[j].member_list().await {
                if list.iter().any(|m| m.peer_ur_ls.contains(&peer_url)) {
                    added = Some(list);
                    break;
                }
            }
            match self.admin[j].member_add(&peer_url).await {
                Ok(_) => match self.admin[j].member_list().await {
                    Ok(list) => {
                        added = Some(list);
                        break;
                    }
                    Err(e) => last = format!("member list via {j}: {e}"),
                },
                Err(e) => last = format!("add via {j}: {e}"),
            }
        }
        let Some(list) = added else {
            bail!("could not add {}: {last}", self.members[i].name());
        };
        // The initial cluster is the current membership, with the new
        // member under its own name (its entry in the list has none yet).
        let names: Vec<String> = self
            .members
            .iter()
            .filter(|m| list.iter().any(|l| l.peer_ur_ls.contains(&m.peer_url())))
            .map(|m| m.name().to_owned())
            .collect();
        let initial = self.initial_cluster(Some(&names));
        let (target, token) = (self.target.clone(), self.token.clone());
        self.members[i].wipe()?;
        self.members[i].start(&target, &initial, ClusterState::Existing, &token)
    }

    /// Which members the cluster lists (by index), through any member.
    pub async fn listed_members(&mut self) -> Option<Vec<usize>> {
        for j in 0..self.members.len() {
            if let Ok(list) = self.admin[j].member_list().await {
                return Some(
                    (0..self.members.len())
                        .filter(|&i| {
                            let url = self.members[i].peer_url();
                            list.iter().any(|m| m.peer_ur_ls.contains(&url))
                        })
                        .collect(),
                );
            }
        }
        None
    }

    /// Kills every member (at the end of a run).
    pub async fn stop_all(&mut self) {
        for m in &mut self.members {
            let _ = m.kill().await;
        }
    }
}
