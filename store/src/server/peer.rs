//! The peer port, server side: the raft wire (`raft::wire`) for AppendEntries and Vote,
//! and the gRPC peer service (`skiff.raft.v1.RaftPeer`) for streamed snapshot
//! installation, requests forwarded by other members, and raft RPCs from members that
//! speak them over gRPC. Both share the port; a connection's first bytes tell them apart.

use std::sync::Arc;

use skiff_proto::raft::raft_peer_server::RaftPeer;
use skiff_proto::raft::{Payload, SnapshotChunk};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::error::StoreError;
use crate::member::{Forward, Member};
use crate::raft::network::SnapshotHeaderMsg;
use crate::raft::types::{decode, encode, Snapshot, SnapshotFile};
use crate::raft::wire;

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

/// Accepts peer connections on `listener` until `shutdown` changes: raft wire
/// connections are served here, the rest are handed to the gRPC server through `grpc`.
pub async fn accept(
    listener: TcpListener,
    member: Arc<Member>,
    grpc: tokio::sync::mpsc::Sender<std::io::Result<TcpStream>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and the like: the next accept may succeed.
                    tracing::warn!(error = %e, "accepting a peer connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        // Without it replies wait for delayed ACKs (~40 ms) and stall the log pipeline.
        let _ = stream.set_nodelay(true);
        let member = member.clone();
        let grpc = grpc.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            match preface(&stream, wire::PREFACE_TIMEOUT).await {
                Ok(Preface::Raft) => serve_raft_wire(member, stream, shutdown).await,
                Ok(Preface::Forward) => serve_forwarded(member, stream, shutdown).await,
                Ok(Preface::Grpc) => {
                    let _ = grpc.send(Ok(stream)).await;
                }
                Err(e) => tracing::debug!(error = %e, "peer connection closed before its preface"),
            }
        });
    }
}

/// What a peer connection carries.
#[derive(Debug, PartialEq)]
enum Preface {
    /// Raft RPCs on the raft wire.
    Raft,
    /// Forwarded requests on the raft wire.
    Forward,
    /// Anything else: HTTP/2 for the gRPC peer service.
    Grpc,
}

/// What the connection carries, from its first bytes (left unread); an error when it
/// closes or sends too little within `timeout`.
async fn preface(stream: &TcpStream, timeout: std::time::Duration) -> std::io::Result<Preface> {
    let mut head = [0u8; wire::MAGIC.len()];
    let peek = async {
        loop {
            let n = stream.peek(&mut head).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed",
                ));
            }
            // Decided as soon as the bytes so far rule both magics out, or complete one.
            if head[..n] != wire::MAGIC[..n] && head[..n] != wire::MAGIC_FORWARD[..n] {
                return Ok(Preface::Grpc);
            }
            if n == head.len() {
                return Ok(if &head == wire::MAGIC {
                    Preface::Raft
                } else {
                    Preface::Forward
                });
            }
            // Part of the magic so far (clients send it in one write, so this is rare).
            // `readable` would be ready at once with those bytes unread: wait instead.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(timeout, peek)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no preface"))?
}

/// The next frame from a wire connection; `None` when it closed, sent a bad frame (logged
/// as `what`) or the member is shutting down.
async fn next_frame<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    what: &str,
) -> Option<Vec<u8>> {
    let frame = tokio::select! {
        f = wire::read_frame(r) => f,
        _ = shutdown.changed() => return None,
    };
    match frame {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "{what}: bad frame; closing the connection");
            None
        }
    }
}

/// Serves raft wire requests on one connection, in turn, until it closes.
async fn serve_raft_wire(
    member: Arc<Member>,
    stream: TcpStream,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut conn = BufReader::new(stream);
    let mut magic = [0u8; wire::MAGIC.len()];
    if conn.read_exact(&mut magic).await.is_err() {
        return;
    }
    loop {
        let Some(body) = next_frame(&mut conn, &mut shutdown, "raft wire").await else {
            return;
        };
        let reply = match handle_raft_wire(&member, &body).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "raft wire: bad request; closing the connection");
                return;
            }
        };
        if wire::write_frame(&mut conn, &[], &reply).await.is_err() {
            return;
        }
    }
}

/// Serves forwarded requests on one connection until it closes: each runs in its own
/// task, answers go back tagged with the request's id as they complete.
async fn serve_forwarded(
    member: Arc<Member>,
    stream: TcpStream,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let (r, w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut magic = [0u8; wire::MAGIC_FORWARD.len()];
    if r.read_exact(&mut magic).await.is_err() {
        return;
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let writer = tokio::spawn(wire::write_queued(w, rx));
    loop {
        let Some(body) = next_frame(&mut r, &mut shutdown, "forward wire").await else {
            break;
        };
        let Some((id, req)) = body.split_at_checked(8) else {
            tracing::warn!("forward wire: frame without a request id; closing the connection");
            break;
        };
        let id: [u8; 8] = id.try_into().unwrap_or_default();
        let req: Forward = match decode(req) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "forward wire: bad request; closing the connection");
                break;
            }
        };
        let member = member.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let r = member.handle_forward(req).await;
            match encode(&r)
                .and_then(|b| wire::frame(&id, &b).map_err(|e| StoreError::Internal(e.to_string())))
            {
                Ok(frame) => {
                    let _ = tx.send(frame);
                }
                Err(e) => tracing::warn!(error = %e, "forward wire: cannot encode an answer"),
            }
        });
    }
    // Answers still being computed are dropped with the connection; the caller sees it
    // lost and reports the outcome as unknown.
    writer.abort();
}

/// One raft wire request: its kind byte and bincode RPC in, the bincode result out.
async fn handle_raft_wire(member: &Member, body: &[u8]) -> Result<Vec<u8>, StoreError> {
    let Some((&kind, rpc)) = body.split_first() else {
        return Err(StoreError::InvalidArgument("empty raft request".into()));
    };
    match kind {
        wire::KIND_APPEND => {
            let started = Instant::now();
            let r = member.raft.append_entries(decode(rpc)?).await;
            member
                .metrics
                .peer_append_handle
                .observe(started.elapsed().as_secs_f64());
            encode(&r)
        }
        wire::KIND_VOTE => encode(&member.raft.vote(decode(rpc)?).await),
        k => Err(StoreError::InvalidArgument(format!(
            "unknown raft request kind {k}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn first_bytes_tell(parts: &[&[u8]]) -> std::io::Result<Preface> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let parts: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await?;
            for p in parts {
                c.write_all(&p).await?;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            // Held open until the server has decided.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            std::io::Result::Ok(())
        });
        let (server, _) = listener.accept().await?;
        let r = preface(&server, std::time::Duration::from_millis(500)).await;
        client.await.expect("client task")?;
        r
    }

    #[tokio::test]
    async fn http2_and_raft_wire_connections_are_told_apart() {
        let h2 = first_bytes_tell(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]).await;
        assert_eq!(h2.unwrap(), Preface::Grpc);
        // A magic split over two segments is still recognised.
        let raft = first_bytes_tell(&[&wire::MAGIC[..3], &wire::MAGIC[3..]]).await;
        assert_eq!(raft.unwrap(), Preface::Raft);
        let fwd = first_bytes_tell(&[wire::MAGIC_FORWARD]).await;
        assert_eq!(fwd.unwrap(), Preface::Forward);
        // A connection closed before its preface is an error, not a guess.
        assert!(first_bytes_tell(&[&wire::MAGIC[..3]]).await.is_err());
        assert!(first_bytes_tell(&[]).await.is_err());
    }
}
