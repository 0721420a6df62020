//! Plain HTTP on the client port, as etcd serves it: `/health`, `/version`, `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::member::Member;
use crate::server::maintenance::ETCD_API_VERSION;

/// The HTTP routes.
pub fn routes(member: Arc<Member>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/readyz", get(health))
        .route("/livez", get(live))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .with_state(member)
}

/// Healthy when a leader is known, no alarm is raised, and a linearizable read
/// succeeds (what etcd's `/health` checks).
async fn health(State(m): State<Arc<Member>>) -> impl IntoResponse {
    let (ok, reason) = if m.leader().is_none() {
        (false, "RAFT NO LEADER".to_string())
    } else if !m.sm.meta.read().alarms.is_empty() {
        (false, "ALARM ACTIVE".to_string())
    } else {
        match tokio::time::timeout(std::time::Duration::from_secs(2), m.linearizable_barrier())
            .await
        {
            Ok(Ok(())) => (true, String::new()),
            Ok(Err(e)) => (false, e.to_string()),
            Err(_) => (false, "timed out".to_string()),
        }
    };
    let body = serde_json::json!({ "health": if ok { "true" } else { "false" }, "reason": reason })
        .to_string();
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, [(header::CONTENT_TYPE, "application/json")], body)
}

async fn live() -> impl IntoResponse {
    (StatusCode::OK, "ok")
}

async fn version() -> impl IntoResponse {
    let body = serde_json::json!({ "etcdserver": ETCD_API_VERSION, "etcdcluster": "3.5.0", "skiff": env!("CARGO_PKG_VERSION") });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

async fn metrics(State(m): State<Arc<Member>>) -> impl IntoResponse {
    m.refresh_raft_gauges();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.metrics.render(),
    )
}
