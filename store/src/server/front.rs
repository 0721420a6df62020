//! The client port's front: one accept loop whose connections speak HTTP/2 (gRPC) or
//! HTTP/1.1, with gRPC requests handed straight to their etcd service by name and
//! everything else (`/health`, `/metrics`, …) to the plain HTTP routes.
//!
//! Why not tonic's `Routes` merged into an axum `Router` (what this replaced): every
//! request then went through axum's path router — a wildcard match whose captured
//! parameter is percent-decoded and stored in the request's extensions — a boxed
//! service per route and two boxings of the request body, before the service's own
//! path match picked the method. The service name is the first path segment, so one
//! comparison finds the service, and its generated server takes hyper's body as it is.
//! Measured with `perf` on one member at 64 clients: the router layers were ~5 % of the
//! store's CPU. A gRPC request for a service this port does not serve gets gRPC's
//! `Unimplemented`, as before; other unknown paths get the HTTP routes' 404.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use skiff_proto::coalesce::Coalescing;
use skiff_proto::etcdserverpb::cluster_server::ClusterServer;
use skiff_proto::etcdserverpb::kv_server::KvServer;
use skiff_proto::etcdserverpb::lease_server::LeaseServer;
use skiff_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use skiff_proto::etcdserverpb::watch_server::WatchServer;
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;

use super::authority::AuthorityFix;
use super::{cluster, http as plain, kv, lease, maintenance, watch, DECODE_LIMIT};
use crate::member::Member;

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// Every service of the client port. One reference count to clone: hyper's adapter
/// clones the service for every request, and cloning the five generated servers and the
/// router each time was a dozen atomic operations per request.
#[derive(Clone)]
pub struct ClientService(Arc<Services>);

struct Services {
    kv: KvServer<kv::KvService>,
    watch: WatchServer<watch::WatchService>,
    lease: LeaseServer<lease::LeaseService>,
    cluster: ClusterServer<cluster::ClusterService>,
    maintenance: MaintenanceServer<maintenance::MaintenanceService>,
    http: axum::Router,
}

impl ClientService {
    /// The etcd v3 services and the HTTP routes of `member`.
    pub fn new(member: &Arc<Member>) -> Self {
        Self(Arc::new(Services {
            kv: KvServer::new(kv::KvService {
                member: member.clone(),
            })
            .max_decoding_message_size(DECODE_LIMIT)
            .max_encoding_message_size(usize::MAX),
            watch: WatchServer::new(watch::WatchService {
                member: member.clone(),
                progress_interval: Duration::from_secs(600),
            }),
            lease: LeaseServer::new(lease::LeaseService {
                member: member.clone(),
            }),
            cluster: ClusterServer::new(cluster::ClusterService {
                member: member.clone(),
            }),
            maintenance: MaintenanceServer::new(maintenance::MaintenanceService {
                member: member.clone(),
            })
            .max_encoding_message_size(usize::MAX),
            http: plain::routes(member.clone()),
        }))
    }
}

/// The gRPC service a request is for: the first segment of `/service/method`.
fn service_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    (!service.is_empty() && !method.is_empty()).then_some(service)
}

fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// gRPC's answer to a method of a service this port does not serve.
fn unimplemented() -> Response<Body> {
    tonic::Status::unimplemented("unknown service").into_http()
}

impl Service<Request<Incoming>> for ClientService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> BoxFuture {
        // The generated servers and the router are ready at all times and clone their
        // state into the futures they return, so a clone of the one needed is called.
        let s = &self.0;
        match service_of(req.uri().path()) {
            Some(KvServer::<kv::KvService>::NAME) => s.kv.clone().call(req),
            Some(WatchServer::<watch::WatchService>::NAME) => s.watch.clone().call(req),
            Some(LeaseServer::<lease::LeaseService>::NAME) => s.lease.clone().call(req),
            Some(ClusterServer::<cluster::ClusterService>::NAME) => s.cluster.clone().call(req),
            Some(MaintenanceServer::<maintenance::MaintenanceService>::NAME) => {
                s.maintenance.clone().call(req)
            }
            _ if is_grpc(&req) => Box::pin(async { Ok(unimplemented()) }),
            _ => {
                let fut = s.http.clone().call(req);
                Box::pin(async move {
                    let resp = fut.await?;
                    Ok(resp.map(Body::new))
                })
            }
        }
    }
}

/// Serves client connections from `listener` until `shutdown` turns true, then closes
/// them gracefully (HTTP/2 GOAWAY; requests in progress finish) and returns when they
/// have. Accepted connections get `TCP_NODELAY` (small gRPC frames must not wait for
/// delayed ACKs), [`Coalescing`] writes and an [`AuthorityFix`] (etcdctl's per-endpoint
/// calls send a whole URL as the HTTP/2 authority).
pub async fn serve(
    listener: TcpListener,
    service: ClientService,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    break;
                }
                continue;
            }
        };
        match accepted {
            Ok((tcp, _)) => {
                let _ = tcp.set_nodelay(true);
                let io = TokioIo::new(Coalescing::new(AuthorityFix::new(tcp)));
                let conn = builder
                    .serve_connection_with_upgrades(io, TowerToHyperService::new(service.clone()))
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::trace!(error = %e, "client connection ended with an error");
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "accepting a client connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_is_the_first_path_segment() {
        assert_eq!(
            service_of("/etcdserverpb.KV/Range"),
            Some("etcdserverpb.KV")
        );
        assert_eq!(
            service_of("/etcdserverpb.Maintenance/Status"),
            Some("etcdserverpb.Maintenance")
        );
        assert_eq!(service_of("/health"), None);
        assert_eq!(service_of("/etcdserverpb.KV/"), None);
        assert_eq!(service_of("//Range"), None);
        assert_eq!(service_of(""), None);
    }
}
