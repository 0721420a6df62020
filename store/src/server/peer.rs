//! The peer service (`skiff.raft.v1.RaftPeer`), server side: raft RPCs, streamed
//! snapshot installation, and requests forwarded by other members.

use std::sync::Arc;

use skiff_proto::raft::raft_peer_server::RaftPeer;
use skiff_proto::raft::{Payload, SnapshotChunk};
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::error::StoreError;
use crate::member::{Forward, Member};
use crate::raft::network::SnapshotHeaderMsg;
use crate::raft::types::{decode, encode, Snapshot, SnapshotFile};

/// Peer service over a member.
pub struct PeerService {
    /// The member.
    pub member: Arc<Member>,
}

fn bad(e: StoreError) -> Status {
    Status::invalid_argument(format!("malformed peer message: {e}"))
}

fn payload<T: serde::Serialize>(v: &T) -> Result<Response<Payload>, Status> {
    Ok(Response::new(Payload {
        data: encode(v).map_err(Status::from)?,
    }))
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = decode(&request.into_inner().data).map_err(bad)?;
        let r = self.member.raft.append_entries(rpc).await;
        payload(&r)
    }

    async fn vote(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = decode(&request.into_inner().data).map_err(bad)?;
        let r = self.member.raft.vote(rpc).await;
        payload(&r)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<Payload>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let (vote, meta): SnapshotHeaderMsg = decode(&first.header).map_err(bad)?;
        let path = self
            .member
            .scratch_dir
            .join(format!("incoming-{}.part", rand::random::<u64>()));
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut received = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            received += chunk.data.len() as u64;
            file.write_all(&chunk.data)
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        file.sync_all()
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        drop(file);
        tracing::info!(snapshot = %meta.snapshot_id, bytes = received, "received snapshot; installing");
        let snapshot = Snapshot {
            meta,
            snapshot: Box::new(SnapshotFile { path: path.clone() }),
        };
        let r = self.member.raft.install_full_snapshot(vote, snapshot).await;
        let _ = tokio::fs::remove_file(&path).await;
        payload(&r)
    }

    async fn forward(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req: Forward = decode(&request.into_inner().data).map_err(bad)?;
        let r = self.member.handle_forward(req).await;
        payload(&r)
    }
}
