//! `pods/log`: the API server proxies `kubectl logs` to the node agent that runs the pod
//! (`GET http://<node InternalIP>:<kubelet port>/containerLogs/<ns>/<pod>/<container>`),
//! streaming its answer back as text.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::error::{ApiError, ApiResult};
use crate::resources;
use crate::server::App;

/// The port node agents serve logs on unless the Node says otherwise (the kubelet's).
pub const DEFAULT_AGENT_PORT: i64 = 10250;

/// Streams a container's log from its node.
pub async fn pod_log(
    app: &Arc<App>,
    ns: &str,
    name: &str,
    q: HashMap<String, String>,
) -> ApiResult<Response> {
    let pods = resources::lookup("", "v1", "pods").expect("pods served");
    let nodes = resources::lookup("", "v1", "nodes").expect("nodes served");
    let pod = app.registry.get(pods, ns, name).await?;
    let requested = q
        .get("container")
        .map(String::as_str)
        .filter(|c| !c.is_empty());
    let container = crate::exec::choose_container(&pod, name, requested)?;
    let node_name = crate::exec::node_name(&pod, name)?;
    let node = app.registry.get(nodes, "", node_name).await?;
    let address = crate::exec::agent_address(&node, node_name)?;
    let mut query = Vec::new();
    for k in [
        "follow",
        "previous",
        "timestamps",
        "tailLines",
        "sinceSeconds",
        "sinceTime",
        "limitBytes",
    ] {
        if let Some(v) = q.get(k) {
            query.push(format!("{k}={}", v.replace(['&', '#', ' '], "")));
        }
    }
    let url = format!(
        "http://{address}/containerLogs/{ns}/{name}/{container}?{}",
        query.join("&")
    );
    let uri: http::Uri = url
        .parse()
        .map_err(|e| ApiError::internal(format!("bad node URL {url}: {e}")))?;
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = client.get(uri).await.map_err(|e| {
        ApiError::new(
            502,
            "InternalError",
            format!("could not reach the node agent on {node_name} for logs: {e}"),
        )
    })?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body).trim().to_string();
        return Err(ApiError::new(status.as_u16(), "BadRequest", text));
    }
    let body = Body::new(resp.into_body().map_err(axum::Error::new));
    let mut out = Response::new(body);
    *out.status_mut() = StatusCode::OK;
    out.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(out)
}
