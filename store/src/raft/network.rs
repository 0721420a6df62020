//! The peer network, client side: openraft's `RaftNetwork` over the `skiff.raft.v1`
//! gRPC service. Raft messages travel as bincode payloads; a snapshot is streamed from
//! its file in 1 MiB chunks over a single call with no per-chunk deadline.
//!
//! The server side is `server::peer`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

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
use skiff_proto::raft::{Payload, SnapshotChunk};
use tokio::io::AsyncReadExt;
use tonic::transport::{Channel, Endpoint};

use crate::raft::types::{
    decode, encode, MemberNode, NodeId, Snapshot, SnapshotMeta, TypeConfig, Vote,
};

/// Largest peer message (raft batches of entries, each up to the request limit).
pub const MAX_PEER_MESSAGE: usize = 256 << 20;

/// Shares one gRPC channel per peer URL between raft replication and forwarding.
#[derive(Clone, Default)]
pub struct PeerChannels {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl PeerChannels {
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
                    .connect_timeout(Duration::from_secs(1))
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
#[derive(Clone, Default)]
pub struct NetworkFactory {
    /// Channels by peer URL.
    pub channels: PeerChannels,
}

/// A connection to one peer.
pub struct PeerConn {
    target: NodeId,
    url: String,
    channels: PeerChannels,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConn;

    async fn new_client(&mut self, target: NodeId, node: &MemberNode) -> PeerConn {
        PeerConn {
            target,
            url: node.peer_urls.first().cloned().unwrap_or_default(),
            channels: self.channels.clone(),
        }
    }
}

fn net_err(msg: impl ToString) -> NetworkError {
    NetworkError::new(&AnyError::error(msg))
}

fn status_err<E: std::error::Error>(s: tonic::Status) -> RPCError<NodeId, MemberNode, E> {
    match s.code() {
        tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&s)),
        _ => RPCError::Network(NetworkError::new(&s)),
    }
}

impl PeerConn {
    async fn call<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        rpc: &Req,
        option: &RPCOption,
        vote: bool,
    ) -> Result<Result<Resp, RaftError<NodeId>>, RPCError<NodeId, MemberNode, RaftError<NodeId>>>
    {
        let mut client = self
            .channels
            .client(&self.url)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let data = encode(rpc).map_err(|e| RPCError::Network(net_err(e)))?;
        let mut req = tonic::Request::new(Payload { data });
        req.set_timeout(option.hard_ttl());
        let resp = if vote {
            client.vote(req).await
        } else {
            client.append_entries(req).await
        };
        let payload = resp.map_err(status_err)?.into_inner();
        decode(&payload.data).map_err(|e| RPCError::Network(net_err(e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, MemberNode, RaftError<NodeId>>>
    {
        self.call(&rpc, &option, false)
            .await?
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, MemberNode, RaftError<NodeId>>> {
        self.call(&rpc, &option, true)
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
