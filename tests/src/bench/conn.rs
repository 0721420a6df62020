//! The benchmark's HTTP/2 connections: hyper's client connection used directly by the
//! generated gRPC clients.
//!
//! Why not tonic's `Channel`: a `Channel` is a tower `Buffer` in front of the connection,
//! so every request is one more queue send, a wake-up of the buffer's worker task and a
//! oneshot back, plus a reconnecting layer the benchmark never uses (a failed connection
//! fails the case). On the shared 2-core machine the client's CPU per request is taken
//! from the servers being measured, so the instrument should cost as little as it can;
//! what goes over the wire is unchanged (same HTTP/2 settings: hyper's defaults, which a
//! `Channel` uses too; same gRPC messages). The connections gather the requests of one
//! scheduler round into one write ([`Coalescing`]), as the store's client port does with
//! its responses and as grpc-go's writer does for etcd's own benchmark tool.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use anyhow::{anyhow, Context as _, Result};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use skiff_proto::coalesce::Coalescing;
use skiff_proto::etcdserverpb::kv_client::KvClient;
use skiff_proto::etcdserverpb::lease_client::LeaseClient;
use skiff_proto::etcdserverpb::watch_client::WatchClient;
use tonic::body::Body;

use crate::client::CONNECT_TIMEOUT;

/// One HTTP/2 connection to a client URL; clones share it (each request is a stream).
/// The connection's driver runs in its own task until the connection closes.
#[derive(Clone, Debug)]
pub struct Conn {
    send: SendRequest<Body>,
    origin: Uri,
}

impl Conn {
    /// Connects to `url` (`http://host:port`) with `TCP_NODELAY` and completes the HTTP/2
    /// handshake.
    ///
    /// # Errors
    /// When the URL is not `http://host:port`, or the connection or handshake fails or takes
    /// longer than [`CONNECT_TIMEOUT`].
    pub async fn connect(url: &str) -> Result<Self> {
        let origin: Uri = url
            .parse()
            .with_context(|| format!("bad endpoint {url:?}"))?;
        if origin.scheme_str() != Some("http") {
            return Err(anyhow!(
                "bad endpoint {url:?}: only http://host:port is supported"
            ));
        }
        let authority = origin
            .authority()
            .ok_or_else(|| anyhow!("bad endpoint {url:?}: no host"))?
            .as_str()
            .to_string();
        let setup = async {
            let tcp = tokio::net::TcpStream::connect(&authority).await?;
            tcp.set_nodelay(true)?;
            let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .handshake(TokioIo::new(Coalescing::new(tcp)))
                .await?;
            tokio::spawn(async move {
                // The connection ends when every sender is dropped or the server goes
                // away; requests in flight then fail and are counted as errors.
                let _ = conn.await;
            });
            anyhow::Ok(send)
        };
        let send = tokio::time::timeout(CONNECT_TIMEOUT, setup)
            .await
            .map_err(|_| anyhow!("connecting to {url} timed out"))?
            .with_context(|| format!("connecting to {url}"))?;
        Ok(Self { send, origin })
    }

    /// The `http://host:port` this connection goes to: the generated clients take it as
    /// their origin, since a request on an HTTP/2 connection carries scheme and authority.
    pub fn origin(&self) -> Uri {
        self.origin.clone()
    }
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<Incoming>, hyper::Error>> + Send>>;

impl tower::Service<Request<Body>> for Conn {
    type Response = Response<Incoming>;
    type Error = hyper::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> ResponseFuture {
        Box::pin(self.send.send_request(req))
    }
}

/// A KV client on `conn`.
pub fn kv(conn: Conn) -> KvClient<Conn> {
    let origin = conn.origin();
    KvClient::with_origin(conn, origin)
}

/// A Lease client on `conn`.
pub fn lease(conn: Conn) -> LeaseClient<Conn> {
    let origin = conn.origin();
    LeaseClient::with_origin(conn, origin)
}

/// A Watch client on `conn`.
pub fn watch(conn: Conn) -> WatchClient<Conn> {
    let origin = conn.origin();
    WatchClient::with_origin(conn, origin)
}
