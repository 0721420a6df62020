//! A running store member: raft, state machine and the operations the client-facing
//! services are built from — proposing a write wherever the leader is, linearizable
//! read barriers, lease keep-alive, membership changes.
//!
//! Any member accepts any request. A write on a follower is forwarded to the leader over
//! the peer API (`Forward`); a linearizable read on a follower asks the leader for a
//! read index and waits until it has applied that far. Concurrent linearizable reads
//! share one ReadIndex round (see [`ReadBarrier`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};
use skiff_proto::etcdserverpb::ResponseHeader;
use skiff_proto::raft::Payload;
use tokio::sync::{mpsc, oneshot};

use crate::config::StoreConfig;
use crate::error::{Result, StoreError};
use crate::metrics::Metrics;
use crate::raft::network::{NetworkFactory, PeerChannels};
use crate::raft::state_machine::{lease_keys, SmShared, StateMachine};
use crate::raft::types::{
    decode, encode, ApplyResult, MemberNode, NodeId, Raft, Request, Response,
};
use crate::raft::wire::ForwardFailure;
use crate::raft::LogStore;
use crate::storage::{self, schema};

/// A member as the Cluster API reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Member id.
    pub id: NodeId,
    /// Name (empty until the member has started).
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Client URLs (empty until the member has started).
    pub client_urls: Vec<String>,
    /// Whether it is a learner (non-voting).
    pub is_learner: bool,
}

/// Requests one member sends another on a client's behalf.
#[derive(Debug, Serialize, Deserialize)]
pub enum Forward {
    /// Propose a write (sent to the leader).
    Propose(Request),
    /// Confirm leadership and return the index to read at (sent to the leader).
    ReadIndex,
    /// Refresh a lease (leader keeps deadlines).
    LeaseKeepAlive(i64),
    /// Remaining TTL of a lease.
    LeaseTimeToLive(i64),
    /// Add a member.
    MemberAdd {
        /// Its peer URLs.
        peer_urls: Vec<String>,
        /// As a learner.
        learner: bool,
    },
    /// Remove a member.
    MemberRemove(NodeId),
    /// Change a member's peer URLs.
    MemberUpdate(NodeId, Vec<String>),
    /// Promote a learner.
    MemberPromote(NodeId),
    /// The cluster's id and members (used by a joining member to learn its id).
    Members,
    /// Ask a member to start an election (leader transfer).
    Campaign,
}

/// Answers to [`Forward`].
#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardReply {
    /// A write's result.
    Applied(ApplyResult),
    /// Read at or after this log index.
    ReadIndex(u64),
    /// Lease TTL after a keep-alive (None = lease gone).
    KeepAlive(Option<i64>),
    /// (remaining, granted) TTL (None = lease gone).
    TimeToLive(Option<(i64, i64)>),
    /// The member added (for MemberAdd) and the member list.
    Members {
        /// Cluster id.
        cluster_id: u64,
        /// Added member (MemberAdd only).
        added: Option<MemberInfo>,
        /// Every member.
        members: Vec<MemberInfo>,
    },
    /// Done.
    Done,
}

/// Coalesces linearizable reads: every read waits for a ReadIndex round that *started
/// after* the read arrived, and all reads queued while a round runs share the next one.
pub struct ReadBarrier {
    tx: mpsc::UnboundedSender<oneshot::Sender<Result<u64>>>,
    rx: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<oneshot::Sender<Result<u64>>>>>,
}

/// Stable 64-bit hash (FNV-1a) for member and cluster ids.
pub fn fnv64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    if h == 0 {
        1
    } else {
        h
    }
}

/// etcd-style member id from peer URLs, cluster token and (for added members) a time.
pub fn member_id(peer_urls: &[String], token: &str, salt: u64) -> NodeId {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let joined = urls.join(",");
    fnv64(&[joined.as_bytes(), token.as_bytes(), &salt.to_be_bytes()])
}

/// A running member.
pub struct Member {
    /// Its configuration.
    pub config: StoreConfig,
    /// Its id.
    pub id: NodeId,
    /// The cluster id.
    pub cluster_id: u64,
    /// openraft.
    pub raft: Raft,
    /// The state machine.
    pub sm: Arc<SmShared>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Peer channels (for forwarding).
    pub peers: PeerChannels,
    read_barrier: ReadBarrier,
    proposer: Proposer,
    /// Where snapshots for Maintenance.Snapshot are staged.
    pub scratch_dir: PathBuf,
    /// Set when this member was removed from the cluster.
    pub removed: tokio::sync::watch::Sender<bool>,
    started: Instant,
    /// `(term, last log index)` when this member started as the leader of `term` (its
    /// saved vote was its own, committed): see [`Member::read_index_round`].
    restarted_leader: Option<(u64, u64)>,
}

use crate::storage::schema::raft_meta::MEMBER_ID as ID_KEY;

impl Member {
    /// Opens the data dir, determines the member and cluster ids, starts raft, and
    /// bootstraps a new cluster if asked to and not yet done.
    ///
    /// # Errors
    /// Storage errors, an invalid configuration, or (joining) no existing member that
    /// knows this member's peer URLs.
    pub async fn start(config: StoreConfig) -> Result<Arc<Self>> {
        config.validate()?;
        let dir = config.data_dir.join("member");
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::Storage(format!("{dir:?}: {e}")))?;
        let db = storage::open_db(&dir.join("db"))?;
        let metrics = Arc::new(Metrics::new());
        let peers = PeerChannels::default();

        let meta_cf = db
            .cf_handle(schema::CF_RAFT_META)
            .ok_or_else(|| StoreError::Corruption("raft_meta".into()))?;
        let stored_id = db
            .get_cf(meta_cf, ID_KEY)?
            .map(|b| decode::<(u64, u64)>(&b))
            .transpose()?;
        let (id, cluster_id, fresh) = match stored_id {
            Some((id, cid)) => (id, cid, false),
            None => {
                let (id, cid) = match config.initial_cluster_state {
                    crate::config::ClusterState::New => new_cluster_ids(&config),
                    crate::config::ClusterState::Existing => join_existing(&config, &peers).await?,
                };
                let mut o = rocksdb::WriteOptions::default();
                o.set_sync(true);
                db.put_cf_opt(meta_cf, ID_KEY, encode(&(id, cid))?, &o)?;
                (id, cid, true)
            }
        };
        tracing::info!(
            member_id = format!("{id:x}"),
            cluster_id = format!("{cluster_id:x}"),
            "starting store member"
        );

        let mut log_store = LogStore::new(
            db.clone(),
            &dir.join("wal"),
            metrics.clone(),
            config.unsafe_no_fsync,
            id,
        )?;
        let log_durability = log_store.durability();
        let restarted_leader = restarted_leader(&mut log_store, id).await?;
        let sm = StateMachine::open(
            db.clone(),
            &dir.join("snap"),
            metrics.clone(),
            log_durability.clone(),
        )?;
        let shared = sm.shared.clone();
        let election = config.election_timeout.as_millis() as u64;
        let raft_config = openraft::Config {
            cluster_name: config.initial_cluster_token.clone(),
            heartbeat_interval: config.heartbeat_interval.as_millis() as u64,
            election_timeout_min: election,
            election_timeout_max: election * 2,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_count.max(1)),
            max_in_snapshot_log_to_keep: config.snapshot_count.clamp(1, 5000),
            max_payload_entries: 1000,
            install_snapshot_timeout: 10_000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StoreError::InvalidArgument(format!("raft configuration: {e}")))?;
        let network = NetworkFactory {
            channels: peers.clone(),
            metrics: metrics.clone(),
            log_durability,
        };
        let raft = Raft::new(id, Arc::new(raft_config), network, log_store, sm)
            .await
            .map_err(|e| StoreError::Internal(format!("starting raft: {e}")))?;

        if fresh && config.initial_cluster_state == crate::config::ClusterState::New {
            let mut members: BTreeMap<NodeId, MemberNode> = BTreeMap::new();
            for (_, urls) in group_cluster(&config.initial_cluster) {
                let mid = member_id(&urls, &config.initial_cluster_token, 0);
                members.insert(mid, MemberNode { peer_urls: urls });
            }
            match raft.initialize(members).await {
                Ok(()) => {}
                Err(RaftError::APIError(e)) => {
                    tracing::info!(error = %e, "cluster already initialized")
                }
                Err(e) => return Err(StoreError::Internal(format!("initialize: {e}"))),
            }
        }

        let (removed, _) = tokio::sync::watch::channel(false);
        let read_barrier = ReadBarrier::new();
        let scratch_dir = dir.join("tmp");
        let _ = std::fs::remove_dir_all(&scratch_dir);
        std::fs::create_dir_all(&scratch_dir)
            .map_err(|e| StoreError::Storage(format!("{scratch_dir:?}: {e}")))?;
        let member = Arc::new(Self {
            config,
            id,
            cluster_id,
            raft,
            sm: shared,
            metrics,
            peers,
            read_barrier,
            proposer: Proposer::new(),
            scratch_dir,
            removed,
            started: Instant::now(),
            restarted_leader,
        });
        Ok(member)
    }

    /// A response header for `revision`.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.id,
            revision,
            raft_term: self.raft.metrics().borrow().current_term,
        }
    }

    /// Sets the raft index gauges from openraft's metrics; called when `/metrics` is
    /// scraped, since following every change of them cost a task wake-up per write.
    pub fn refresh_raft_gauges(&self) {
        let rx = self.raft.metrics();
        let m = rx.borrow();
        self.metrics
            .applied_index
            .set(m.last_applied.map_or(0, |l| l.index) as i64);
        self.metrics
            .commit_index
            .set(m.last_log_index.unwrap_or(0) as i64);
    }

    /// The header function watchers use.
    pub fn header_fn(self: &Arc<Self>) -> crate::watch::HeaderFn {
        let cluster_id = self.cluster_id;
        let id = self.id;
        let metrics = self.raft.metrics();
        Arc::new(move |rev| ResponseHeader {
            cluster_id,
            member_id: id,
            revision: rev,
            raft_term: metrics.borrow().current_term,
        })
    }

    /// The current leader, if known.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Whether this member is the leader.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    fn peer_url(&self, id: NodeId) -> Option<String> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.membership()
            .get_node(&id)
            .and_then(|n| n.peer_urls.first().cloned())
    }

    /// Sends a request to the leader (or `to`), relaying its answer; gives up after a
    /// request timeout.
    async fn forward(&self, to: Option<NodeId>, req: &Forward) -> Result<ForwardReply> {
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        self.forward_until(to, req, deadline).await
    }

    /// [`Member::forward`], giving up at `deadline`.
    async fn forward_until(
        &self,
        to: Option<NodeId>,
        req: &Forward,
        deadline: tokio::time::Instant,
    ) -> Result<ForwardReply> {
        let leader = match to {
            Some(t) => t,
            None => tokio::time::timeout_at(deadline, self.wait_for_leader())
                .await
                .map_err(|_| StoreError::Timeout)??,
        };
        let url = self.peer_url(leader).ok_or(StoreError::NoLeader)?;
        let reply = self
            .peers
            .forwarder(&url)
            .call(&encode(req)?, deadline)
            .await
            .map_err(|e| match e {
                ForwardFailure::Timeout => StoreError::Timeout,
                // Could not connect: the request was never sent, so it is safe to retry.
                ForwardFailure::Connect(_) => StoreError::NoLeader,
                ForwardFailure::Lost => StoreError::Unavailable(
                    "etcdserver: forwarding to the leader failed: connection lost".into(),
                ),
                ForwardFailure::Refused(e) => StoreError::InvalidArgument(format!(
                    "etcdserver: cannot forward the request to the leader: {e}"
                )),
            })?;
        decode::<Result<ForwardReply>>(&reply)?
    }

    /// Waits (bounded by an election timeout or two) for a leader to be known.
    async fn wait_for_leader(&self) -> Result<NodeId> {
        let deadline = Instant::now() + self.config.election_timeout * 3;
        let mut rx = self.raft.metrics();
        loop {
            if let Some(l) = rx.borrow().current_leader {
                return Ok(l);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::NoLeader);
            }
            if tokio::time::timeout(left, rx.changed()).await.is_err() {
                return Err(StoreError::NoLeader);
            }
        }
    }

    /// Replicates a request and returns its result, wherever the leader is.
    ///
    /// # Errors
    /// The request's own error, or `NoLeader` / `LeaderChanged` / `Timeout` (outcome
    /// unknown for the last two).
    pub async fn propose(&self, req: Request) -> Result<ApplyResult> {
        self.metrics.proposals_pending.inc();
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        let r = self.propose_inner(req, deadline).await;
        self.metrics.proposals_pending.dec();
        let r = r?;
        r.result.as_ref().map_err(Clone::clone)?;
        Ok(r)
    }

    /// Proposes at the leader, wherever it is, until `deadline`. Retries only failures
    /// that prove the request never reached the log — this member or the one it asked
    /// was not the leader, no leader is known, the leader could not be connected to — so
    /// a retry can never apply a write twice.
    ///
    /// The deadline is not one timer per request: a request waiting in the proposer's
    /// queue is bounded by the timer of the batch it joins (`commit`), a forwarded one by
    /// the forward's own; a timer per write was a measurable share of a put's CPU.
    async fn propose_inner(
        &self,
        req: Request,
        deadline: tokio::time::Instant,
    ) -> Result<ApplyResult> {
        loop {
            let err = if self.is_leader() {
                match self.proposer.submit(self, req.clone(), deadline).await {
                    Ok(r) => return Ok(r),
                    Err(e) => e,
                }
            } else {
                match self
                    .forward_until(None, &Forward::Propose(req.clone()), deadline)
                    .await
                {
                    Ok(ForwardReply::Applied(r)) => return Ok(r),
                    Ok(other) => {
                        return Err(StoreError::Internal(format!(
                            "unexpected forward reply {other:?}"
                        )))
                    }
                    Err(e) => e,
                }
            };
            match err {
                StoreError::LeaderChanged | StoreError::NoLeader => {
                    let retry = tokio::time::Instant::now() + Duration::from_millis(20);
                    if retry >= deadline {
                        return Err(StoreError::Timeout);
                    }
                    tokio::time::sleep_until(retry).await;
                }
                e => return Err(e),
            }
        }
    }

    /// Blocks until this member's state reflects every write acknowledged before the
    /// call (a linearizable read may then be served locally).
    ///
    /// # Errors
    /// `NoLeader`, `Timeout`, or `Unavailable` when the cluster cannot confirm a leader.
    pub async fn linearizable_barrier(&self) -> Result<()> {
        if self.config.unsafe_local_reads {
            return Ok(());
        }
        let deadline = Instant::now() + self.config.request_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.read_barrier.round()).await {
                Err(_) => return Err(StoreError::Timeout),
                Ok(Ok(index)) => return self.wait_applied(index).await,
                // The leader moved or is not known yet: a later round may succeed.
                Ok(Err(StoreError::LeaderChanged | StoreError::NoLeader | StoreError::Timeout))
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    async fn wait_applied(&self, index: u64) -> Result<()> {
        if self.sm.meta.read().applied.map_or(0, |l| l.index) >= index {
            return Ok(());
        }
        self.raft
            .wait(Some(self.config.request_timeout))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map_err(|_| StoreError::Timeout)?;
        Ok(())
    }

    /// One ReadIndex round: confirms leadership with a quorum and returns the index to
    /// read at (asking the leader if this member is not it).
    async fn read_index_round(&self) -> Result<u64> {
        if self.is_leader() {
            match self.raft.get_read_log_id().await {
                Ok((Some(read), _applied)) => {
                    // openraft 0.9 gives a leader that restarted in its term the first
                    // entry it proposed in that term (or its saved commit point) as the
                    // read index, but entries after it may have been committed, and
                    // acknowledged, before the restart: reading there served a value
                    // overwritten seconds earlier (jepsen register/kill, the leader
                    // killed and restarted before the others elected another). Its log
                    // at start holds every entry it may have committed, so a read in
                    // that term waits for all of them.
                    let floor = match self.restarted_leader {
                        Some((term, last)) if read.leader_id.term == term => last,
                        _ => 0,
                    };
                    return Ok(read.index.max(floor));
                }
                Ok((None, _)) => return Ok(0),
                Err(RaftError::APIError(_)) => {}
                Err(RaftError::Fatal(e)) => {
                    return Err(StoreError::Unavailable(format!("raft stopped: {e}")))
                }
            }
        }
        match self.forward(None, &Forward::ReadIndex).await? {
            ForwardReply::ReadIndex(i) => Ok(i),
            other => Err(StoreError::Internal(format!(
                "unexpected forward reply {other:?}"
            ))),
        }
    }

    /// Keep-alive of a lease at the leader; returns the TTL.
    ///
    /// # Errors
    /// `LeaseNotFound` if it does not exist or expired.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64> {
        if self.is_leader() {
            return self
                .leader_keep_alive(id)
                .await?
                .ok_or(StoreError::LeaseNotFound);
        }
        match self.forward(None, &Forward::LeaseKeepAlive(id)).await? {
            ForwardReply::KeepAlive(t) => t.ok_or(StoreError::LeaseNotFound),
            other => Err(StoreError::Internal(format!(
                "unexpected forward reply {other:?}"
            ))),
        }
    }

    /// Renews a lease on this member as the leader (for its own clients and forwarded
    /// ones); `None` if the lease does not exist or expired.
    ///
    /// Leadership is confirmed and everything committed before it applied first, as
    /// etcd waits for its applied index (and has check-quorum) before a renewal. Without
    /// that, jepsen's lease/partition (seed 23) saw a new leader renew a lease whose
    /// revocation — proposed by the old leader when the lease had expired on its clock,
    /// and not committed before the partition healed — it committed with its own first
    /// entry right after. The same check keeps a leader cut off from the others (which
    /// openraft does not depose until it hears of a newer term) from renewing leases that
    /// the majority's new leader is counting down.
    ///
    /// # Errors
    /// `LeaderChanged`, `NoLeader`, `Timeout` (leadership not confirmed in time).
    async fn leader_keep_alive(&self, id: i64) -> Result<Option<i64>> {
        self.confirmed_lessor().await?;
        Ok(self.sm.lessor.keep_alive(id))
    }

    /// (remaining, granted) TTL of a lease on this member as the leader; `None` if the
    /// lease does not exist. Behind the same confirmation as a renewal (etcd waits for
    /// its applied index here too): a leader cut off from the others, or one whose
    /// lessor has not taken over the deadlines yet, would report a lease the majority
    /// already counts differently.
    ///
    /// # Errors
    /// As [`Member::leader_keep_alive`].
    async fn leader_time_to_live(&self, id: i64) -> Result<Option<(i64, i64)>> {
        self.confirmed_lessor().await?;
        Ok(self.sm.lessor.time_to_live(id))
    }

    /// Returns once this member is the leader, confirmed by a linearizable barrier, and
    /// its lessor keeps the lease deadlines. The caller acts on the lessor right after,
    /// with no await in between, so leadership still holds when it does.
    ///
    /// # Errors
    /// `LeaderChanged`, `NoLeader`, `Timeout` (leadership not confirmed in time).
    async fn confirmed_lessor(&self) -> Result<()> {
        self.linearizable_barrier().await?;
        // The barrier proves leadership (or, had this member lost it meanwhile, was
        // answered by the new leader: the lease belongs there, not here). The lessor
        // takes over the deadlines once the leadership task has seen the leadership
        // (`leadership_loop`), a moment after it began: wait for either to change.
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        let mut primary = self.sm.lessor.watch_primary();
        let mut metrics = self.raft.metrics();
        loop {
            if !self.is_leader() {
                return Err(StoreError::LeaderChanged);
            }
            if self.sm.lessor.is_primary() {
                return Ok(());
            }
            tokio::select! {
                r = primary.changed() => r.map_err(|_| StoreError::Internal("lessor gone".into()))?,
                r = metrics.changed() => r.map_err(|_| StoreError::NoLeader)?,
                () = tokio::time::sleep_until(deadline) => return Err(StoreError::Timeout),
            }
        }
    }

    /// (remaining, granted) TTL of a lease, from the leader once it confirmed its
    /// leadership (see [`Member::leader_time_to_live`]).
    ///
    /// # Errors
    /// `LeaseNotFound`; `LeaderChanged`, `NoLeader`, `Timeout` when no leader confirmed.
    pub async fn lease_time_to_live(&self, id: i64) -> Result<(i64, i64)> {
        if self.is_leader() {
            return self
                .leader_time_to_live(id)
                .await?
                .ok_or(StoreError::LeaseNotFound);
        }
        match self.forward(None, &Forward::LeaseTimeToLive(id)).await? {
            ForwardReply::TimeToLive(t) => t.ok_or(StoreError::LeaseNotFound),
            other => Err(StoreError::Internal(format!(
                "unexpected forward reply {other:?}"
            ))),
        }
    }

    /// Keys attached to a lease (local state).
    ///
    /// # Errors
    /// Storage errors.
    pub fn lease_keys(&self, id: i64) -> Result<Vec<Vec<u8>>> {
        lease_keys(&self.sm.db, id)
    }

    /// Every member, from this member's applied membership.
    pub fn members(&self) -> Vec<MemberInfo> {
        let meta = self.sm.meta.read();
        let m = meta.membership.membership();
        let voters: BTreeSet<NodeId> = m.voter_ids().collect();
        m.nodes()
            .map(|(id, node)| {
                let attrs = meta.members.get(id).cloned().unwrap_or_default();
                MemberInfo {
                    id: *id,
                    name: attrs.name,
                    peer_urls: node.peer_urls.clone(),
                    client_urls: attrs.client_urls,
                    is_learner: !voters.contains(id) && !attrs.promote_pending,
                }
            })
            .collect()
    }

    /// Runs a membership operation on the leader.
    ///
    /// # Errors
    /// etcd's membership errors.
    pub async fn membership(&self, op: Forward) -> Result<ForwardReply> {
        if self.is_leader() {
            self.handle_membership(op).await
        } else {
            self.forward(None, &op).await
        }
    }

    async fn handle_membership(&self, op: Forward) -> Result<ForwardReply> {
        let mut added = None;
        match op {
            Forward::MemberAdd { peer_urls, learner } => {
                for u in &peer_urls {
                    crate::config::validate_url(u).map_err(|_| StoreError::MemberBadUrls)?;
                }
                if peer_urls.is_empty() {
                    return Err(StoreError::MemberBadUrls);
                }
                let members = self.members();
                if members
                    .iter()
                    .any(|m| m.peer_urls.iter().any(|u| peer_urls.contains(u)))
                {
                    return Err(StoreError::PeerUrlExists);
                }
                if learner && members.iter().any(|m| m.is_learner) {
                    return Err(StoreError::TooManyLearners);
                }
                let salt = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                let id = member_id(&peer_urls, &self.config.initial_cluster_token, salt);
                if !learner {
                    // Recorded first so that whoever leads later finishes the promotion.
                    self.propose(Request::PromoteWhenReady { id, pending: true })
                        .await?;
                }
                self.raft
                    .add_learner(
                        id,
                        MemberNode {
                            peer_urls: peer_urls.clone(),
                        },
                        false,
                    )
                    .await
                    .map_err(membership_err)?;
                added = Some(MemberInfo {
                    id,
                    name: String::new(),
                    peer_urls,
                    client_urls: vec![],
                    is_learner: learner,
                });
            }
            Forward::MemberRemove(id) => {
                let meta = self.sm.meta.read().membership.clone();
                let m = meta.membership();
                if m.get_node(&id).is_none() {
                    return Err(StoreError::MemberNotFound);
                }
                let is_voter = m.voter_ids().any(|v| v == id);
                drop(meta);
                if is_voter {
                    let voters: BTreeSet<NodeId> =
                        self.sm.meta.read().membership.voter_ids().collect();
                    if voters.len() == 1 {
                        return Err(StoreError::NotEnoughStarted);
                    }
                    self.raft
                        .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                        .await
                        .map_err(membership_err)?;
                } else {
                    self.raft
                        .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                        .await
                        .map_err(membership_err)?;
                }
                let _ = self
                    .propose(Request::PromoteWhenReady { id, pending: false })
                    .await;
            }
            Forward::MemberUpdate(id, peer_urls) => {
                if peer_urls.is_empty()
                    || peer_urls
                        .iter()
                        .any(|u| crate::config::validate_url(u).is_err())
                {
                    return Err(StoreError::MemberBadUrls);
                }
                if !self.members().iter().any(|m| m.id == id) {
                    return Err(StoreError::MemberNotFound);
                }
                self.raft
                    .change_membership(
                        ChangeMembers::SetNodes(BTreeMap::from([(id, MemberNode { peer_urls })])),
                        false,
                    )
                    .await
                    .map_err(membership_err)?;
            }
            Forward::MemberPromote(id) => {
                if !self.members().iter().any(|m| m.id == id) {
                    return Err(StoreError::MemberNotFound);
                }
                let raft_learner = !self.sm.meta.read().membership.voter_ids().any(|v| v == id);
                if !raft_learner {
                    return Err(StoreError::MemberNotLearner);
                }
                if !self.learner_ready(id) {
                    return Err(StoreError::LearnerNotReady);
                }
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                    .map_err(membership_err)?;
                let _ = self
                    .propose(Request::PromoteWhenReady { id, pending: false })
                    .await;
            }
            _ => return Err(StoreError::Internal("not a membership operation".into())),
        }
        Ok(ForwardReply::Members {
            cluster_id: self.cluster_id,
            added,
            members: self.members(),
        })
    }

    /// Whether a learner has caught up with the leader (etcd: match ≥ 90% of the
    /// leader's commit index).
    fn learner_ready(&self, id: NodeId) -> bool {
        let m = self.raft.metrics().borrow().clone();
        let leader_last = m.last_log_index.unwrap_or(0);
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned().flatten())
            .map_or(0, |l| l.index);
        matched as f64 >= leader_last as f64 * 0.9 && matched > 0
    }

    /// Serves a request another member forwarded.
    pub async fn handle_forward(&self, req: Forward) -> Result<ForwardReply> {
        match req {
            Forward::Propose(r) => {
                if !self.is_leader() {
                    return Err(StoreError::LeaderChanged);
                }
                // The forwarding member gives up at its own deadline; this one, for
                // the batch the request joins, no later.
                let deadline = tokio::time::Instant::now() + self.config.request_timeout;
                Ok(ForwardReply::Applied(
                    self.proposer.submit(self, r, deadline).await?,
                ))
            }
            Forward::ReadIndex => {
                if !self.is_leader() {
                    return Err(StoreError::LeaderChanged);
                }
                Ok(ForwardReply::ReadIndex(self.read_barrier.round().await?))
            }
            Forward::LeaseKeepAlive(id) => {
                if !self.is_leader() {
                    return Err(StoreError::LeaderChanged);
                }
                Ok(ForwardReply::KeepAlive(self.leader_keep_alive(id).await?))
            }
            Forward::LeaseTimeToLive(id) => {
                if !self.is_leader() {
                    return Err(StoreError::LeaderChanged);
                }
                Ok(ForwardReply::TimeToLive(
                    self.leader_time_to_live(id).await?,
                ))
            }
            Forward::Members => {
                let members = self.members();
                // Before the initial membership is applied (a cluster still forming) this
                // member cannot tell who belongs: an empty list would read as "you were
                // removed" to the asker.
                if members.is_empty() {
                    return Err(StoreError::Unavailable(
                        "etcdserver: membership not known yet".into(),
                    ));
                }
                Ok(ForwardReply::Members {
                    cluster_id: self.cluster_id,
                    added: None,
                    members,
                })
            }
            Forward::Campaign => {
                self.raft
                    .trigger()
                    .elect()
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                Ok(ForwardReply::Done)
            }
            op => {
                if !self.is_leader() {
                    return Err(StoreError::LeaderChanged);
                }
                self.handle_membership(op).await
            }
        }
    }

    /// Hands leadership to `target` (etcd MoveLeader): the target campaigns while this
    /// leader stops sending heartbeats, so the followers' leader leases lapse.
    ///
    /// # Errors
    /// `BadLeaderTransferee` for an unknown or non-voting target; `Timeout` if the
    /// target did not become leader.
    pub async fn move_leader(&self, target: NodeId) -> Result<()> {
        if !self.is_leader() {
            return Err(StoreError::Unavailable("etcdserver: not leader".into()));
        }
        if target == self.id {
            return Ok(());
        }
        if !self
            .sm
            .meta
            .read()
            .membership
            .voter_ids()
            .any(|v| v == target)
        {
            return Err(StoreError::BadLeaderTransferee);
        }
        self.raft.runtime_config().heartbeat(false);
        self.raft.runtime_config().elect(false);
        let deadline = Instant::now() + self.config.election_timeout * 5;
        let mut result = Err(StoreError::Timeout);
        while Instant::now() < deadline {
            let _ = self.forward(Some(target), &Forward::Campaign).await;
            tokio::time::sleep(self.config.election_timeout / 2).await;
            if self.leader() == Some(target) {
                result = Ok(());
                break;
            }
        }
        self.raft.runtime_config().heartbeat(true);
        self.raft.runtime_config().elect(true);
        result
    }

    /// Asks the leader (or, with no leader, every peer) whether this member is still in
    /// the cluster. A removed member stops receiving the log, so it cannot learn of its
    /// own removal from raft.
    async fn check_removed(&self) -> bool {
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let targets: Vec<NodeId> = match self.leader() {
            Some(l) if l != self.id => vec![l],
            _ => membership
                .membership()
                .nodes()
                .map(|(id, _)| *id)
                .filter(|id| *id != self.id)
                .collect(),
        };
        let mut answered = 0;
        for t in targets {
            if let Ok(Ok(ForwardReply::Members {
                cluster_id,
                members,
                ..
            })) = tokio::time::timeout(
                Duration::from_secs(1),
                self.forward(Some(t), &Forward::Members),
            )
            .await
            {
                if cluster_id != self.cluster_id || members.iter().any(|m| m.id == self.id) {
                    return false;
                }
                answered += 1;
            }
        }
        answered > 0
    }

    /// Seconds since this member started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Starts the member's background loops (leadership tracking, lease expiry,
    /// learner promotion, attribute publishing, metrics). They stop with `shutdown`.
    pub fn spawn_background(self: &Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        tokio::spawn(read_barrier_loop(self.clone(), shutdown.clone()));
        tokio::spawn(proposer_loop(self.clone(), shutdown.clone()));
        tokio::spawn(leadership_loop(self.clone(), shutdown.clone()));
        tokio::spawn(housekeeping_loop(self.clone(), shutdown));
    }
}

fn membership_err<E: std::fmt::Display>(e: E) -> StoreError {
    let s = e.to_string();
    if s.contains("ForwardToLeader") || s.contains("forward") {
        StoreError::LeaderChanged
    } else {
        StoreError::Unavailable(format!("etcdserver: membership change failed: {s}"))
    }
}

/// (name, its peer URLs) in `--initial-cluster` order.
fn group_cluster(c: &[(String, String)]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for (n, u) in c {
        match out.iter_mut().find(|(x, _)| x == n) {
            Some((_, urls)) => urls.push(u.clone()),
            None => out.push((n.clone(), vec![u.clone()])),
        }
    }
    out
}

fn new_cluster_ids(config: &StoreConfig) -> (NodeId, u64) {
    let token = &config.initial_cluster_token;
    let mut ids: Vec<u64> = group_cluster(&config.initial_cluster)
        .iter()
        .map(|(_, urls)| member_id(urls, token, 0))
        .collect();
    ids.sort_unstable();
    let my_urls: Vec<String> = config
        .initial_cluster
        .iter()
        .filter(|(n, _)| *n == config.name)
        .map(|(_, u)| u.clone())
        .collect();
    let id = member_id(&my_urls, token, 0);
    let id_bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_be_bytes()).collect();
    (id, fnv64(&[&id_bytes, token.as_bytes()]))
}

async fn join_existing(config: &StoreConfig, peers: &PeerChannels) -> Result<(NodeId, u64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (name, url) in &config.initial_cluster {
            if *name == config.name {
                continue;
            }
            let Ok(mut client) = peers.client(url) else {
                continue;
            };
            let Ok(data) = encode(&Forward::Members) else {
                continue;
            };
            let mut req = tonic::Request::new(Payload { data });
            req.set_timeout(Duration::from_secs(2));
            let Ok(resp) = client.forward(req).await else {
                continue;
            };
            if let Ok(Ok(ForwardReply::Members {
                cluster_id,
                members,
                ..
            })) = decode::<Result<ForwardReply>>(&resp.into_inner().data)
            {
                if let Some(m) = members.iter().find(|m| {
                    m.peer_urls
                        .iter()
                        .any(|u| config.initial_advertise_peer_urls.contains(u))
                }) {
                    return Ok((m.id, cluster_id));
                }
                return Err(StoreError::InvalidArgument(format!(
                    "the cluster at {url} has no member with peer URLs {:?}: add it first (etcdctl member add)",
                    config.initial_advertise_peer_urls
                )));
            }
        }
        if Instant::now() > deadline {
            return Err(StoreError::Unavailable(
                "could not reach any member of --initial-cluster to join the existing cluster"
                    .into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A request waiting for the proposer task, with its deadline and where its result goes.
type Proposal = (
    Request,
    tokio::time::Instant,
    oneshot::Sender<Result<ApplyResult>>,
);

/// Group commit at the proposer: requests that arrive while earlier ones are being
/// committed are proposed together as one log entry (`Request::Batch`), so a burst of
/// concurrent writes costs one log append, one replication round and one fsync. A
/// request that finds nothing queued and a batch slot free is proposed at once by its own
/// task (no hand-off to the proposer task and back: three task wake-ups fewer on a lone
/// write's path).
struct Proposer {
    tx: mpsc::UnboundedSender<Proposal>,
    rx: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<Proposal>>>,
    /// Requests sent to the proposer task and not yet taken into a batch.
    queued: std::sync::atomic::AtomicUsize,
    /// Batch slots: at most [`BATCHES_IN_FLIGHT`] entries being committed at once.
    permits: Arc<tokio::sync::Semaphore>,
}

/// Most requests in one batched entry.
const MAX_BATCH: usize = 512;
/// Most bytes of requests in one batched entry.
const MAX_BATCH_BYTES: usize = 4 << 20;
/// Batches being committed at once.
const BATCHES_IN_FLIGHT: usize = 1;

impl Proposer {
    fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: parking_lot::Mutex::new(Some(rx)),
            queued: std::sync::atomic::AtomicUsize::new(0),
            permits: Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT)),
        }
    }

    /// Proposes `req` on this member (which must be the leader) and returns its result.
    /// `LeaderChanged` means the request was not appended to the log.
    /// Gives up at `deadline` (the result is then unknown: `Timeout`).
    async fn submit(
        &self,
        member: &Member,
        req: Request,
        deadline: tokio::time::Instant,
    ) -> Result<ApplyResult> {
        use std::sync::atomic::Ordering;
        if self.queued.load(Ordering::SeqCst) == 0 {
            if let Ok(permit) = self.permits.clone().try_acquire_owned() {
                let r = commit(member, vec![req], deadline).await;
                drop(permit);
                return r.and_then(|mut v| {
                    v.pop()
                        .ok_or_else(|| StoreError::Internal("no result for a write".into()))?
                });
            }
        }
        let (tx, rx) = oneshot::channel();
        self.queued.fetch_add(1, Ordering::SeqCst);
        if self.tx.send((req, deadline, tx)).is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(StoreError::Stopped);
        }
        rx.await.map_err(|_| StoreError::Stopped)?
    }
}

/// Proposes `reqs` as one entry (a lone request as itself, several as a
/// `Request::Batch`), tagged for a direct hand-over of the result (`raft::proposals`),
/// and returns each request's result, in order. An error applies to all of them;
/// `LeaderChanged` means the entry was not appended, `Timeout` (at `deadline`) that its
/// outcome is unknown.
async fn commit(
    member: &Member,
    reqs: Vec<Request>,
    deadline: tokio::time::Instant,
) -> Result<Vec<Result<ApplyResult>>> {
    let n = reqs.len();
    let inner = if n == 1 {
        reqs.into_iter()
            .next()
            .unwrap_or(Request::Batch(Vec::new()))
    } else {
        Request::Batch(reqs)
    };
    let mut waiter = member.sm.proposals.register();
    let entry = Request::Tagged {
        id: waiter.id,
        request: Box::new(inner),
    };
    let mut reply = member
        .raft
        .client_write_ff(entry)
        .await
        .map_err(|e| StoreError::Unavailable(format!("raft stopped: {e}")))?;
    // One timer per entry, not per request (see `Member::propose_inner`).
    let outcome = tokio::time::timeout_at(deadline, async move {
        tokio::select! {
            // The usual way: the state machine handed the result over when it applied
            // the entry. openraft's own reply comes later; it is still received (by a
            // task of its own), since openraft warns about every reply nobody takes.
            r = &mut waiter.rx => {
                tokio::spawn(async move {
                    let _ = reply.await;
                });
                r.map_err(|_| StoreError::Stopped)
            }
            w = &mut reply => match w {
                // Applied. The state machine handed the result to the waiter before
                // openraft replied, but `select!` may pick this branch when both are
                // ready; openraft's copy is only a placeholder then.
                Ok(Ok(resp)) => Ok(match waiter.rx.try_recv() {
                    Ok(r) => r,
                    Err(_) => resp.data,
                }),
                // Not appended: safe for the callers to retry elsewhere.
                Ok(Err(ClientWriteError::ForwardToLeader(_))) => Err(StoreError::LeaderChanged),
                Ok(Err(ClientWriteError::ChangeMembershipError(e))) => {
                    Err(StoreError::Internal(e.to_string()))
                }
                Err(_) => Err(StoreError::Unavailable(
                    "raft stopped before the write's outcome was known".into(),
                )),
            },
        }
    })
    .await;
    let r = outcome.map_err(|_| StoreError::Timeout)??;
    if n == 1 {
        return Ok(vec![Ok(r)]);
    }
    match r {
        ApplyResult {
            result: Ok(Response::Batch(results)),
            ..
        } if results.len() == n => Ok(results.into_iter().map(Ok).collect()),
        other => Err(StoreError::Internal(format!(
            "unexpected batch result {other:?}"
        ))),
    }
}

fn request_size(r: &Request) -> usize {
    use prost::Message;
    match r {
        Request::Put(p) => p.0.encoded_len(),
        Request::DeleteRange(d) => d.0.encoded_len(),
        Request::Txn(t) => t.0.encoded_len(),
        _ => 64,
    }
}

async fn proposer_loop(member: Arc<Member>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    use std::sync::atomic::Ordering;
    let Some(mut rx) = member.proposer.rx.lock().take() else {
        return;
    };
    let permits = member.proposer.permits.clone();
    loop {
        let first = tokio::select! {
            p = rx.recv() => match p { Some(p) => p, None => return },
            _ = shutdown.changed() => return,
        };
        // Wait for a slot with the first request in hand, so that what queues meanwhile
        // joins its batch.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = request_size(&first.0);
        let mut deadline = first.1;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += request_size(&p.0);
                    deadline = deadline.min(p.1);
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        member
            .proposer
            .queued
            .fetch_sub(batch.len(), Ordering::SeqCst);
        let m = member.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (reqs, waiters): (Vec<Request>, Vec<oneshot::Sender<Result<ApplyResult>>>) =
                batch.into_iter().map(|(r, _, w)| (r, w)).unzip();
            match commit(&m, reqs, deadline).await {
                Ok(results) => {
                    for (w, r) in waiters.into_iter().zip(results) {
                        let _ = w.send(r);
                    }
                }
                Err(e) => {
                    for w in waiters {
                        let _ = w.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

impl ReadBarrier {
    fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: parking_lot::Mutex::new(Some(rx)),
        }
    }

    async fn round(&self) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }
}

/// `(term, last log index)` if the saved vote makes this member the leader of its term on
/// start (openraft resumes leadership without an election then).
async fn restarted_leader(log_store: &mut LogStore, id: NodeId) -> Result<Option<(u64, u64)>> {
    use openraft::storage::RaftLogStorage;
    let storage = |e: openraft::StorageError<NodeId>| StoreError::Storage(e.to_string());
    let vote = log_store.read_vote().await.map_err(storage)?;
    let last = log_store
        .get_log_state()
        .await
        .map_err(storage)?
        .last_log_id;
    Ok(match (vote, last) {
        (Some(v), Some(last)) if v.is_committed() && v.leader_id().voted_for() == Some(id) => {
            Some((v.leader_id().term, last.index))
        }
        _ => None,
    })
}

/// Serves ReadIndex rounds: takes every queued read, runs one round for all of them.
async fn read_barrier_loop(member: Arc<Member>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let Some(mut rx) = member.read_barrier.rx.lock().take() else {
        return;
    };
    loop {
        let first = tokio::select! {
            w = rx.recv() => match w { Some(w) => w, None => return },
            _ = shutdown.changed() => return,
        };
        let mut waiters = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        // A round that cannot finish (its leader vanished) must not hold up the reads
        // queued behind it for a whole request timeout.
        let round_timeout = (member.config.election_timeout * 2).max(Duration::from_millis(500));
        let r = tokio::time::timeout(round_timeout, member.read_index_round())
            .await
            .unwrap_or(Err(StoreError::Timeout));
        member.metrics.read_index_rounds.inc();
        member.metrics.read_index_reads.inc_by(waiters.len() as u64);
        for w in waiters {
            let _ = w.send(r.clone());
        }
    }
}

/// Tracks leadership: lease deadlines restart on becoming leader; counts leader
/// changes; notices this member's removal.
async fn leadership_loop(member: Arc<Member>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    // The server metrics change with the vote, role, leader and membership only; the full
    // metrics change with every entry appended or applied, and following them woke this
    // task (and cloned the whole struct) several times per write. The index gauges are
    // read when `/metrics` is scraped instead (`Member::refresh_raft_gauges`).
    let mut rx = member.raft.server_metrics();
    let mut was_leader = false;
    let mut last_leader = None;
    let mut was_member = false;
    loop {
        {
            let m = rx.borrow_and_update().clone();
            let leader = m.state == ServerState::Leader;
            let term = m.vote.leader_id().term;
            if leader && !was_leader {
                tracing::info!(term, "became leader");
                member.sm.lessor.promote();
            } else if !leader && was_leader {
                tracing::info!(term, "stepped down");
                member.sm.lessor.demote();
            }
            was_leader = leader;
            if m.current_leader != last_leader {
                if m.current_leader.is_some() {
                    member.metrics.leader_changes.inc();
                }
                last_leader = m.current_leader;
            }
            member
                .metrics
                .has_leader
                .set(i64::from(m.current_leader.is_some()));
            member.metrics.is_leader.set(i64::from(leader));
            member.metrics.term.set(term as i64);
            let in_membership = m
                .membership_config
                .membership()
                .get_node(&member.id)
                .is_some();
            if in_membership {
                was_member = true;
            } else if was_member && m.membership_config.log_id().is_some() {
                tracing::warn!("this member was removed from the cluster");
                let _ = member.removed.send(true);
            }
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

/// Periodic work: lease expiry and learner promotion (leader), publishing this
/// member's name and client URLs, the quota alarm, gauges.
async fn housekeeping_loop(member: Arc<Member>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published = false;
    let mut promoting: BTreeSet<NodeId> = BTreeSet::new();
    let mut ticks: u64 = 0;
    let mut removed_seen = 0u32;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        ticks += 1;
        if ticks.is_multiple_of(8) && !member.is_leader() {
            // Two checks in a row, 2 s apart: one answer from a peer whose applied
            // membership lags a change must not make this member leave.
            if member.check_removed().await {
                removed_seen += 1;
            } else {
                removed_seen = 0;
            }
            if removed_seen >= 2 {
                tracing::warn!("the cluster no longer lists this member: it was removed");
                let _ = member.removed.send(true);
                return;
            }
        }
        let s = &member.sm;
        let db_size = storage::db_size(&s.db);
        member.metrics.db_size.set(db_size as i64);
        member.metrics.revision.set(s.kv.current_revision());
        member.metrics.compact_revision.set(s.kv.compact_revision());
        member.metrics.watchers.set(s.hub.len() as i64);
        member.metrics.slow_watchers.set(s.hub.unsynced() as i64);
        member.metrics.leases.set(s.lessor.len() as i64);

        if member.leader().is_none() {
            continue;
        }
        if !published {
            let attrs = s
                .meta
                .read()
                .members
                .get(&member.id)
                .cloned()
                .unwrap_or_default();
            if attrs.name == member.config.name
                && attrs.client_urls == member.config.advertise_client_urls
            {
                published = true;
            } else {
                let m = member.clone();
                tokio::spawn(async move {
                    let req = Request::MemberAttrs {
                        id: m.id,
                        name: m.config.name.clone(),
                        client_urls: m.config.advertise_client_urls.clone(),
                    };
                    if let Err(e) = m.propose(req).await {
                        tracing::debug!(error = %e, "publishing member attributes; will retry");
                    }
                });
            }
        }
        if db_size > member.config.quota_backend_bytes
            && !s.meta.read().alarms.contains(&(
                member.id,
                skiff_proto::etcdserverpb::AlarmType::Nospace as i32,
            ))
        {
            tracing::warn!(
                db_size,
                quota = member.config.quota_backend_bytes,
                "database space exceeded: raising NOSPACE"
            );
            let m = member.clone();
            tokio::spawn(async move {
                let req = Request::Alarm {
                    activate: true,
                    member_id: m.id,
                    alarm: skiff_proto::etcdserverpb::AlarmType::Nospace as i32,
                };
                let _ = m.propose(req).await;
            });
        }
        if !member.is_leader() {
            promoting.clear();
            continue;
        }
        for id in s.lessor.take_expired() {
            let m = member.clone();
            tokio::spawn(async move {
                match m.propose(Request::LeaseRevoke { id }).await {
                    Ok(_) | Err(StoreError::LeaseNotFound) => {}
                    Err(e) => {
                        tracing::debug!(lease = id, error = %e, "revoking expired lease; will retry");
                        m.sm.lessor.retry_expired(id);
                    }
                }
            });
        }
        let pending: Vec<NodeId> = {
            let meta = s.meta.read();
            let voters: BTreeSet<NodeId> = meta.membership.voter_ids().collect();
            meta.members
                .iter()
                .filter(|(id, a)| {
                    a.promote_pending
                        && !voters.contains(id)
                        && meta.membership.membership().get_node(id).is_some()
                })
                .map(|(id, _)| *id)
                .collect()
        };
        for id in pending {
            if promoting.contains(&id) || !member.learner_ready(id) {
                continue;
            }
            promoting.insert(id);
            let m = member.clone();
            tokio::spawn(async move {
                tracing::info!(
                    member = format!("{id:x}"),
                    "promoting caught-up member to voter"
                );
                let r = m
                    .raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await;
                match r {
                    Ok(_) => {
                        let _ = m
                            .propose(Request::PromoteWhenReady { id, pending: false })
                            .await;
                    }
                    Err(e) => tracing::warn!(error = %e, "promotion failed; will retry"),
                }
            });
        }
    }
}
