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
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::resources;
use crate::server::App;

/// The port node agents serve logs on unless the Node says otherwise (the kubelet's).
pub const DEFAULT_AGENT_PORT: i64 = 10250;

fn container_names(pod: &Value, field: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

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
    let containers = container_names(&pod, "containers");
    let init = container_names(&pod, "initContainers");
    let container = match q
        .get("container")
        .map(String::as_str)
        .filter(|c| !c.is_empty())
    {
        Some(c) => {
            if !containers.iter().chain(init.iter()).any(|n| n == c) {
                return Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )));
            }
            c.to_string()
        }
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )))
        }
    };
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let node = app.registry.get(nodes, "", node_name).await?;
    let ip = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
        .and_then(|x| x["address"].as_str())
        .ok_or_else(|| {
            ApiError::bad_request(format!("node {node_name} has no InternalIP address"))
        })?
        .to_string();
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_i64)
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_AGENT_PORT);
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
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip
    };
    let url = format!(
        "http://{host}:{port}/containerLogs/{ns}/{name}/{container}?{}",
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
