//! The peer network, client side: openraft's `RaftNetwork`. AppendEntries and Vote travel
//! on the raft wire (`raft::wire`: bincode frames on one TCP connection per replication
//! stream); a snapshot is streamed from its file in 1 MiB chunks over a single call of
//! the `skiff.raft.v1` gRPC service, with no per-chunk deadline.
//!
//! The server side is `server::peer`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::AnyError;
use parking_lot::Mutex;
use skiff_proto::raft::raft_peer_client::RaftPeerClient;
use skiff_proto::raft::SnapshotChunk;
use tokio::io::{AsyncReadExt, BufReader};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use crate::metrics::Metrics;
use crate::raft::durability::LogDurability;
use crate::raft::types::{
    decode, encode, MemberNode, NodeId, Snapshot, SnapshotMeta, TypeConfig, Vote,
};
use crate::raft::wire::{self, Forwarder, CONNECT_TIMEOUT};

/// Largest peer message (raft batches of entries, each up to the request limit).
pub const MAX_PEER_MESSAGE: usize = 256 << 20;

/// Shares one gRPC channel and one forward connection per peer URL.
#[derive(Clone, Default)]
pub struct PeerChannels {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    forwarders: Arc<Mutex<HashMap<String, Arc<Forwarder>>>>,
}

impl PeerChannels {
    /// The forwarder (requests relayed to another member) for the peer at `url`.
    pub fn forwarder(&self, url: &str) -> Arc<Forwarder> {
        self.forwarders
            .lock()
            .entry(url.to_string())
            .or_insert_with(|| Arc::new(Forwarder::new(url)))
            .clone()
    }

    /// A client for the peer at `url` (connected lazily, reconnecting on demand).
    ///
    /// # Errors
    /// A URL that is not a valid endpoint.
    pub fn client(&self, url: &str) -> Result<RaftPeerClient<Channel>, tonic::transport::Error> {
        let mut g = self.channels.lock();
        let ch = match g.get(url) {
            Some(c) => c.clone(),
            None => {
                let c = Endpoint::from_shared(url.to_string())?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .keep_alive_timeout(Duration::from_secs(5))
                    .connect_lazy();
                g.insert(url.to_string(), c.clone());
                c
            }
        };
        Ok(RaftPeerClient::new(ch)
            .max_decoding_message_size(MAX_PEER_MESSAGE)
            .max_encoding_message_size(MAX_PEER_MESSAGE))
    }
}

/// openraft's network factory.
#[derive(Clone)]
pub struct NetworkFactory {
    /// Channels by peer URL.
    pub channels: PeerChannels,
    /// Where round trips are recorded.
    pub metrics: Arc<Metrics>,
    /// How far this member's early-reported appends are synced: no commit index beyond
    /// it is sent (`docs/store-leader-early-append.md`).
    pub log_durability: Arc<LogDurability>,
}

/// A connection to one peer.
pub struct PeerConn {
    target: NodeId,
    url: String,
    channels: PeerChannels,
    metrics: Arc<Metrics>,
    log_durability: Arc<LogDurability>,
    /// The raft wire connection, opened on first use and after a failure.
    conn: Option<BufReader<TcpStream>>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConn;

    async fn new_client(&mut self, target: NodeId, node: &MemberNode) -> PeerConn {
        PeerConn {
            target,
            url: node.peer_urls.first().cloned().unwrap_or_default(),
            channels: self.channels.clone(),
            metrics: self.metrics.clone(),
            log_durability: self.log_durability.clone(),
            conn: None,
        }
    }
}

fn net_err(msg: impl ToString) -> NetworkError {
    NetworkError::new(&AnyError::error(msg))
}

/// Why a raft wire call failed.
enum WireFailure {
    /// No connection could be made: the peer is down or unreachable.
    Connect(std::io::Error),
    /// The connection failed or was closed during the exchange.
    Io(std::io::Error),
}

/// Opens a raft wire connection to the peer at `url`.
async fn wire_connect(url: &str) -> std::io::Result<BufReader<TcpStream>> {
    Ok(BufReader::new(wire::connect(url, wire::MAGIC).await?))
}

/// One request and its response on `conn`, connecting first when there is none.
async fn wire_exchange(
    conn: &mut Option<BufReader<TcpStream>>,
    url: &str,
    kind: u8,
    body: &[u8],
) -> Result<Vec<u8>, WireFailure> {
    if conn.is_none() {
        *conn = Some(wire_connect(url).await.map_err(WireFailure::Connect)?);
    }
    let Some(c) = conn.as_mut() else {
        unreachable!("connected above")
    };
    wire::write_frame(c, &[kind], body)
        .await
        .map_err(WireFailure::Io)?;
    match wire::read_frame(c).await {
        Ok(Some(b)) => Ok(b),
        Ok(None) => Err(WireFailure::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "peer closed the connection",
        ))),
        Err(e) => Err(WireFailure::Io(e)),
    }
}

impl PeerConn {
    /// A raft RPC over the raft wire, within the RPC's hard TTL. A failed connection is
    /// dropped; a call that failed on a reused connection (the peer restarted since) is
    /// retried once on a fresh one, which is safe: AppendEntries and Vote are idempotent.
    async fn call<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &mut self,
        kind: u8,
        rpc: &Req,
        option: &RPCOption,
    ) -> Result<Result<Resp, RaftError<NodeId>>, RPCError<NodeId, MemberNode, RaftError<NodeId>>>
    {
        let body = encode(rpc).map_err(|e| RPCError::Network(net_err(e)))?;
        let url = self.url.as_str();
        let conn = &mut self.conn;
        let attempt = async {
            let reused = conn.is_some();
            match wire_exchange(conn, url, kind, &body).await {
                Err(WireFailure::Io(_)) if reused => {
                    *conn = None;
                    wire_exchange(conn, url, kind, &body).await
                }
                r => r,
            }
        };
        let r = tokio::time::timeout(option.hard_ttl(), attempt).await;
        let reply = match r {
            Ok(Ok(reply)) => reply,
            Ok(Err(WireFailure::Connect(e))) => {
                self.conn = None;
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
            Ok(Err(WireFailure::Io(e))) => {
                self.conn = None;
                return Err(RPCError::Network(NetworkError::new(&e)));
            }
            Err(_) => {
                // The reply may still arrive; it must not be read as the next call's.
                self.conn = None;
                return Err(RPCError::Network(net_err(format!(
                    "no reply from {} within {:?}",
                    self.url,
                    option.hard_ttl()
                ))));
            }
        };
        decode(&reply).map_err(|e| {
            self.conn = None;
            RPCError::Network(net_err(e))
        })
    }
}

impl RaftNetwork<TypeConfig> for PeerConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, MemberNode, RaftError<NodeId>>>
    {
        // A follower applies what it hears committed, so it hears of a commit only once
        // the leader's own copy is durable: openraft counted that copy before its sync.
        // Waits only in the moment a follower acknowledged faster than the leader synced.
        if let Some(commit) = &rpc.leader_commit {
            self.log_durability.wait(commit.index).await;
        }
        let started = Instant::now();
        let r = self.call(wire::KIND_APPEND, &rpc, &option).await;
        self.metrics
            .peer_round_trip
            .observe(started.elapsed().as_secs_f64());
        r?.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, MemberNode, RaftError<NodeId>>> {
        self.call(wire::KIND_VOTE, &rpc, &option)
            .await?
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let mut client = self
            .channels
            .client(&self.url)
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?;
        let header = encode(&(vote, snapshot.meta.clone()))
            .map_err(|e| StreamingError::Network(net_err(e)))?;
        let mut file = tokio::fs::File::open(&snapshot.snapshot.path)
            .await
            .map_err(|e| StreamingError::Network(net_err(format!("open snapshot: {e}"))))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotChunk>(4);
        // Reads the file into chunks as fast as the stream drains them.
        let reader = tokio::spawn(async move {
            if tx
                .send(SnapshotChunk {
                    header,
                    data: Vec::new(),
                })
                .await
                .is_err()
            {
                return;
            }
            loop {
                let mut buf = vec![0u8; 1 << 20];
                match file.read(&mut buf).await {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx
                            .send(SnapshotChunk {
                                header: Vec::new(),
                                data: buf,
                            })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reading snapshot file for transfer");
                        return;
                    }
                }
            }
        });
        let send = client.install_snapshot(tokio_stream::wrappers::ReceiverStream::new(rx));
        let result = tokio::select! {
            closed = cancel => {
                reader.abort();
                return Err(StreamingError::Closed(closed));
            }
            r = send => r,
        };
        let payload = result
            .map_err(|s| match s.code() {
                tonic::Code::Unavailable => StreamingError::Unreachable(Unreachable::new(&s)),
                _ => StreamingError::Network(NetworkError::new(&s)),
            })?
            .into_inner();
        let r: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> =
            decode(&payload.data).map_err(|e| StreamingError::Network(net_err(e)))?;
        r.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
    }

    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}

/// The header of the first snapshot chunk.
pub type SnapshotHeaderMsg = (Vote, SnapshotMeta);
