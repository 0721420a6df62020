//! The member's network front: the etcd v3 gRPC services and plain HTTP on the client
//! URLs, the peer service on the peer URLs.
//!
//! # Layout
//! - [`kv`], [`watch`], [`lease`], [`cluster`], [`maintenance`]: one file per etcd
//!   service.
//! - [`peer`]: the member-to-member service.
//! - [`front`]: the client port: gRPC by service name, the rest to [`http`].
//! - [`http`]: `/health`, `/version`, `/metrics`.

pub mod authority;
pub mod cluster;
pub mod front;
pub mod http;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod peer;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use skiff_proto::etcdserverpb::AlarmType;
use skiff_proto::raft::raft_peer_server::RaftPeerServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::Status;

use crate::config::{url_host_port, StoreConfig};
use crate::error::{Result, StoreError};
use crate::member::Member;
use crate::raft::network::MAX_PEER_MESSAGE;

/// Refuses the request with "no leader" when the client sent `hasleader: true` and this
/// member knows no leader (what Kubernetes and etcd clients ask for).
pub(crate) fn check_leader<T>(member: &Member, req: &tonic::Request<T>) -> Result<(), Status> {
    let wants = req
        .metadata()
        .get("hasleader")
        .is_some_and(|v| v.as_bytes() == b"true");
    if wants && member.leader().is_none() {
        return Err(StoreError::NoLeader.into());
    }
    Ok(())
}

/// Refuses requests over `--max-request-bytes`, with etcd's two answers: past the gRPC
/// receive limit (`--max-request-bytes` + 512 KiB) grpc-go's ResourceExhausted, below it
/// etcd's own "request is too large". The services decode up to [`DECODE_LIMIT`] so
/// that both cases reach this check.
pub(crate) fn check_size(member: &Member, len: usize) -> Result<(), Status> {
    let grpc_limit = member.config.max_request_bytes + 512 * 1024;
    if len > grpc_limit {
        return Err(Status::resource_exhausted(format!(
            "grpc: received message larger than max ({len} vs. {grpc_limit})"
        )));
    }
    if len > member.config.max_request_bytes {
        return Err(StoreError::RequestTooLarge.into());
    }
    Ok(())
}

/// Largest message the client services decode; see [`check_size`].
pub const DECODE_LIMIT: usize = 64 << 20;

/// Refuses writes that add data while the NOSPACE alarm is raised.
pub(crate) fn check_space(member: &Member) -> Result<(), StoreError> {
    let nospace = AlarmType::Nospace as i32;
    if member
        .sm
        .meta
        .read()
        .alarms
        .iter()
        .any(|(_, a)| *a == nospace)
    {
        return Err(StoreError::NoSpace);
    }
    Ok(())
}

/// A started member with its servers.
pub struct RunningStore {
    /// The member.
    pub member: Arc<Member>,
    /// Bound client addresses.
    pub client_addrs: Vec<SocketAddr>,
    /// Bound peer addresses.
    pub peer_addrs: Vec<SocketAddr>,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind(url: &str) -> Result<TcpListener> {
    let hp = url_host_port(url);
    TcpListener::bind(hp)
        .await
        .map_err(|e| StoreError::InvalidArgument(format!("cannot listen on {url}: {e}")))
}

/// Binds the listeners, starts the member and serves until [`RunningStore::shutdown`].
///
/// # Errors
/// A listener that cannot be bound, or the member failing to start.
pub async fn start(config: StoreConfig) -> Result<RunningStore> {
    let mut client_listeners = Vec::new();
    for u in &config.listen_client_urls {
        client_listeners.push(bind(u).await?);
    }
    let mut peer_listeners = Vec::new();
    for u in &config.listen_peer_urls {
        peer_listeners.push(bind(u).await?);
    }
    let client_addrs = client_listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    let peer_addrs = peer_listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();

    // The peer service must be reachable while the member starts (a joining member's
    // peers, and raft itself, talk to it), so it is served from a placeholder until the
    // member exists.
    let (member_tx, member_rx) = tokio::sync::watch::channel::<Option<Arc<Member>>>(None);
    for l in peer_listeners {
        let member_rx = member_rx.clone();
        let mut sd = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut rx = member_rx;
            let member = loop {
                if let Some(m) = rx.borrow().clone() {
                    break m;
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    _ = sd.changed() => return,
                }
            };
            let svc = RaftPeerServer::new(peer::PeerService {
                member: member.clone(),
            })
            .max_decoding_message_size(MAX_PEER_MESSAGE)
            .max_encoding_message_size(MAX_PEER_MESSAGE);
            // One port for both: `peer::accept` serves raft wire connections itself and
            // passes the others (HTTP/2) on to tonic.
            let (grpc_tx, grpc_rx) = tokio::sync::mpsc::channel(64);
            let acceptor = tokio::spawn(peer::accept(l, member, grpc_tx, sd.clone()));
            let r = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(svc)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::ReceiverStream::new(grpc_rx),
                    async move {
                        let _ = sd.changed().await;
                    },
                )
                .await;
            acceptor.abort();
            if let Err(e) = r {
                tracing::error!(error = %e, "peer server failed");
            }
        }));
    }

    let member = Member::start(config.clone()).await?;
    let _ = member_tx.send(Some(member.clone()));
    member.spawn_background(shutdown_rx.clone());

    // Like etcd, serve clients only once this member has published its name and client
    // URLs through raft, so every member that answers clients is listed as started.
    let mut waited = 0u32;
    loop {
        let published = member
            .sm
            .meta
            .read()
            .members
            .get(&member.id)
            .is_some_and(|a| {
                a.name == config.name && a.client_urls == config.advertise_client_urls
            });
        if published {
            break;
        }
        waited += 1;
        if waited.is_multiple_of(50) {
            tracing::info!("waiting for a quorum to publish this member before serving clients");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    for l in client_listeners {
        let service = front::ClientService::new(&member);
        tasks.push(tokio::spawn(front::serve(l, service, shutdown_rx.clone())));
    }
    tracing::info!(
        name = %config.name,
        client = ?config.listen_client_urls,
        peer = ?config.listen_peer_urls,
        "store member serving"
    );
    Ok(RunningStore {
        member,
        client_addrs,
        peer_addrs,
        shutdown,
        tasks,
    })
}

impl RunningStore {
    /// Stops serving, stops raft, and waits for the servers to finish.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.member.sm.hub.shutdown();
        // Open watch streams keep a graceful shutdown waiting; give them a moment.
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        if let Err(e) = self.member.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }

    /// Resolves when this member has been removed from its cluster.
    pub async fn removed(&self) {
        let mut rx = self.member.removed.subscribe();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
