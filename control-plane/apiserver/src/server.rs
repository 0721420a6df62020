//! Starting an API server: the store client, the watch caches, the bootstrap objects,
//! the compactor, and the HTTP listener with every route.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::json;
use tokio::net::TcpListener;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::rest::{error_response, json_response};
use crate::store::Store;
use crate::{discovery, openapi, rest};

/// Configuration of one API server.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to serve the Kubernetes API.
    pub listen: SocketAddr,
    /// The store's client URLs (`http://127.0.0.1:2379`, …).
    pub store_endpoints: Vec<String>,
    /// The range ClusterIPs come from.
    pub service_cidr: String,
    /// How often the store's history is compacted (0: never).
    pub compaction_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:6443".parse().expect("valid address"),
            store_endpoints: vec!["http://127.0.0.1:2379".into()],
            service_cidr: "10.96.0.0/12".into(),
            compaction_interval: Duration::from_secs(300),
        }
    }
}

/// Shared state of the handlers.
pub struct App {
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub address: SocketAddr,
}

/// A running API server.
pub struct ApiServer {
    /// The address it listens on (useful with port 0).
    pub addr: SocketAddr,
    pub app: Arc<App>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Stops serving.
    pub fn shutdown(self) {
        self.task.abort();
    }
}

/// Starts an API server: connects to the store (waiting for it), creates the bootstrap
/// namespaces and Service, starts the watch caches, and serves.
pub async fn start(config: Config) -> anyhow::Result<ApiServer> {
    let store = Arc::new(Store::new(&config.store_endpoints)?);
    let registry = Arc::new(Registry::new(store, &config.service_cidr)?);
    registry.start_caches();
    let mut delay = Duration::from_millis(100);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        match registry.bootstrap().await {
            Ok(()) => break,
            Err(e)
                if tokio::time::Instant::now() < deadline && matches!(e.code, 503 | 504 | 500) =>
            {
                tracing::info!(error = %e, "waiting for the store");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => anyhow::bail!("bootstrapping the cluster objects: {e}"),
        }
    }
    if !config.compaction_interval.is_zero() {
        tokio::spawn(registry.clone().run_compactor(config.compaction_interval));
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    let app = Arc::new(App {
        registry,
        metrics: crate::metrics::global().clone(),
        address: addr,
    });
    let router = router(app.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "API server stopped");
        }
    });
    tracing::info!(%addr, endpoints = ?config.store_endpoints, "API server serving");
    Ok(ApiServer { addr, app, task })
}

/// Every route: the `skiff.v1` gRPC service (HTTP/2) and the REST API (HTTP/1.1 or 2)
/// on one port.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route_service("/skiff.v1.Api/{*method}", crate::grpc::service(app.clone()))
        .fallback(route)
        .layer(axum::middleware::from_fn(fenced))
        .with_state(app)
}

/// Runs the request with the fencing token its [`crate::fence::HEADER`] carries (if any),
/// so every store transaction it makes is checked against the leader's Lease.
async fn fenced(req: Request, next: axum::middleware::Next) -> Response {
    let token = match req.headers().get(crate::fence::HEADER) {
        None => None,
        Some(v) => match crate::fence::Fence::parse(v.to_str().unwrap_or("")) {
            Ok(f) => Some(f),
            Err(e) => return error_response(&e),
        },
    };
    crate::fence::scope(token, next.run(req)).await
}

fn text(code: StatusCode, body: &'static str) -> Response {
    let mut r = (code, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn route(State(app): State<Arc<App>>, req: Request) -> Response {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let is_get = req.method() == axum::http::Method::GET;
    match segs.as_slice() {
        ["version"] if is_get => json_response(200, &version(), &[]),
        ["healthz"] | ["livez"] if is_get => text(StatusCode::OK, "ok"),
        ["readyz"] if is_get => {
            if app.registry.caches().all(|c| c.ready()) {
                text(StatusCode::OK, "ok")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "[-]watch-caches failed: not yet synced\nreadyz check failed",
                )
            }
        }
        ["metrics"] if is_get => {
            for c in app.registry.caches() {
                app.metrics.set_cache(
                    c.res.plural,
                    c.len(),
                    c.rev(),
                    c.dropped.load(std::sync::atomic::Ordering::Relaxed),
                );
            }
            let mut r = Response::new(Body::from(app.metrics.encode()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        ["api"] if is_get => {
            json_response(200, &discovery::api_versions(&app.address.to_string()), &[])
        }
        ["apis"] if is_get => json_response(200, &discovery::api_group_list(), &[]),
        ["apis", g] if is_get => match discovery::api_group(g) {
            Some(v) => json_response(200, &v, &[]),
            None => not_found(),
        },
        ["api", v] if is_get => match discovery::resource_list("", v) {
            Some(l) => json_response(200, &l, &[]),
            None => not_found(),
        },
        ["apis", g, v] if is_get => match discovery::resource_list(g, v) {
            Some(l) => json_response(200, &l, &[]),
            None => not_found(),
        },
        ["openapi", "v3"] if is_get => json_response(200, &openapi::index(), &[]),
        ["openapi", "v3", rest @ ..] if is_get => match openapi::get(&rest.join("/")) {
            Some(doc) => {
                let mut r = Response::new(Body::from(doc.bytes.as_ref().clone()));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
            None => not_found(),
        },
        ["api", ..] | ["apis", ..] => rest::serve_resource(State(app), req).await,
        _ => not_found(),
    }
}

fn not_found() -> Response {
    error_response(&ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    ))
}

/// `/version`: the Kubernetes version whose API this server speaks.
pub fn version() -> serde_json::Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-skiff",
        "gitCommit": env!("CARGO_PKG_VERSION"),
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "n/a (Rust)",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH }),
    })
}
