//! `pods/exec`: the API server relays `kubectl exec`'s WebSocket to the node agent that
//! runs the pod (`ws://<node InternalIP>:<kubelet port>/exec/<ns>/<pod>/<container>?…`).
//!
//! ```text
//! kubectl ──ws (v5.channel.k8s.io)──▶ API server ──ws (same subprotocol)──▶ node agent
//!         ◀── frames relayed as they are, both ways, until either side closes ──
//! ```
//!
//! The pod, container and node are checked first, so a mistake gets a `Status` error in
//! kubectl's words. Then the agent is dialled before the client's upgrade is accepted:
//! if the agent refuses (the container is not running, say), the client gets the
//! agent's status code and message instead of a WebSocket that closes at once. Only
//! WebSockets are spoken: kubectl ≥ 1.30 uses them by default and falls back to SPDY
//! only if the upgrade fails, and the SPDY request then gets the same errors.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use crate::error::{ApiError, ApiResult};
use crate::logs::DEFAULT_AGENT_PORT;
use crate::resources;
use crate::server::App;

/// The subprotocols relayed, preferred first (kubectl ≥ 1.30 offers only v5; v4 has the
/// same framing without the close-stdin signal).
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// How long dialling the node agent may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What an exec request asks for (`PodExecOptions`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOptions {
    pub container: Option<String>,
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl ExecOptions {
    /// Parses the query string (`command` once per argument).
    ///
    /// # Errors
    /// 400 without a command, with none of stdin, stdout and stderr, or with a malformed
    /// flag.
    pub fn parse(query: &str) -> ApiResult<ExecOptions> {
        let flag = |k: &str, v: &str| match v {
            "" | "1" | "true" | "True" => Ok(true),
            "0" | "false" | "False" => Ok(false),
            _ => Err(ApiError::bad_request(format!(
                "invalid value {v:?} for {k}: expected true or false"
            ))),
        };
        let mut o = ExecOptions::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "container" if !v.is_empty() => o.container = Some(v.into_owned()),
                "command" => o.command.push(v.into_owned()),
                "stdin" => o.stdin = flag(&k, &v)?,
                "stdout" => o.stdout = flag(&k, &v)?,
                "stderr" => o.stderr = flag(&k, &v)?,
                "tty" => o.tty = flag(&k, &v)?,
                _ => {}
            }
        }
        if o.command.is_empty() {
            return Err(ApiError::bad_request(
                "you must specify at least one command for the container",
            ));
        }
        if !(o.stdin || o.stdout || o.stderr) {
            return Err(ApiError::bad_request(
                "you must specify at least 1 of stdin, stdout, stderr",
            ));
        }
        Ok(o)
    }

    /// The query string for the node agent.
    fn agent_query(&self) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for c in &self.command {
            s.append_pair("command", c);
        }
        for (k, on) in [
            ("stdin", self.stdin),
            ("stdout", self.stdout),
            ("stderr", self.stderr),
            ("tty", self.tty),
        ] {
            if on {
                s.append_pair(k, "true");
            }
        }
        s.finish()
    }
}

fn names(pod: &Value, field: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The container a request means: the one named (any of the pod's containers, init or
/// ephemeral containers), or the only one.
///
/// # Errors
/// 400 in the API server's words for an unknown container, or none named in a pod with
/// several.
pub fn choose_container(pod: &Value, pod_name: &str, requested: Option<&str>) -> ApiResult<String> {
    let containers = names(pod, "containers");
    match requested {
        Some(c) => {
            let known = containers
                .iter()
                .chain(&names(pod, "initContainers"))
                .chain(&names(pod, "ephemeralContainers"))
                .any(|n| n == c);
            if known {
                Ok(c.to_string())
            } else {
                Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {pod_name}"
                )))
            }
        }
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {pod_name}, choose one of: [{}]",
            containers.join(" ")
        ))),
    }
}

/// The node the pod is bound to.
///
/// # Errors
/// 400 if it has none yet.
pub fn node_name<'a>(pod: &'a Value, pod_name: &str) -> ApiResult<&'a str> {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!("pod {pod_name} does not have a host assigned"))
        })
}

/// `host:port` of a node's agent: its InternalIP and the kubelet port it reports.
///
/// # Errors
/// 400 if the node has no InternalIP.
pub fn agent_address(node: &Value, node_name: &str) -> ApiResult<String> {
    let ip = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
        .and_then(|x| x["address"].as_str())
        .ok_or_else(|| {
            ApiError::bad_request(format!("node {node_name} has no InternalIP address"))
        })?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_i64)
        .filter(|p| (1..=65535).contains(p))
        .unwrap_or(DEFAULT_AGENT_PORT);
    Ok(if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    })
}

/// Serves `GET|POST …/namespaces/{ns}/pods/{name}/exec`.
///
/// # Errors
/// 400/404 for a bad request or pod (before any upgrade), 400 for a request that is not
/// a WebSocket upgrade with a supported subprotocol, the agent's status if it refuses,
/// 502 if it cannot be reached.
pub async fn pod_exec(app: &Arc<App>, ns: &str, name: &str, req: Request) -> ApiResult<Response> {
    let opts = ExecOptions::parse(req.uri().query().unwrap_or(""))?;
    let pods = resources::lookup("", "v1", "pods").expect("pods served");
    let nodes = resources::lookup("", "v1", "nodes").expect("nodes served");
    let pod = app.registry.get(pods, ns, name).await?;
    let container = choose_container(&pod, name, opts.container.as_deref())?;
    let node_name = node_name(&pod, name)?;
    let node = app.registry.get(nodes, "", node_name).await?;
    let addr = agent_address(&node, node_name)?;
    let url = format!(
        "ws://{addr}/exec/{ns}/{name}/{container}?{}",
        opts.agent_query()
    );
    proxy(req, &url, &format!("the node agent on {node_name}")).await
}

/// Accepts the client's WebSocket upgrade once the agent at `url` accepted the same
/// subprotocol, and relays between them in a spawned task. `agent` names the agent in
/// messages.
///
/// # Errors
/// 400 for a request that is not a WebSocket upgrade offering one of [`PROTOCOLS`]; the
/// agent's status and message if it refuses; 502 if it cannot be reached.
pub async fn proxy(mut req: Request, url: &str, agent: &str) -> ApiResult<Response> {
    let headers = req.headers();
    let key = websocket_key(headers)?;
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| PROTOCOLS.contains(&p.as_str()))
        .collect();
    if offered.is_empty() {
        return Err(ApiError::bad_request(format!(
            "exec needs one of the WebSocket subprotocols {}; the client offered {:?}",
            PROTOCOLS.join(", "),
            headers
                .get(header::SEC_WEBSOCKET_PROTOCOL)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
        )));
    }
    let (agent_ws, protocol) = dial(url, &offered, agent).await?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "exec: the client's upgrade failed");
                return;
            }
        };
        let client =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        relay(client, agent_ws).await;
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
            .map_err(|e| ApiError::internal(format!("WebSocket accept key: {e}")))?,
    );
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_str(&protocol)
            .map_err(|e| ApiError::internal(format!("WebSocket subprotocol: {e}")))?,
    );
    Ok(resp)
}

/// The request's `Sec-WebSocket-Key`, after checking that it asks for a WebSocket.
fn websocket_key(headers: &HeaderMap) -> ApiResult<String> {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if upgrade.to_ascii_lowercase().starts_with("spdy") {
        return Err(ApiError::bad_request(format!(
            "exec over SPDY is not supported by this server: use WebSockets (kubectl ≥ 1.30 does unless KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false) with subprotocol {}",
            PROTOCOLS[0]
        )));
    }
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok());
    match key {
        Some(k) if upgrade.eq_ignore_ascii_case("websocket") && connection_upgrade => {
            Ok(k.to_string())
        }
        _ => Err(ApiError::bad_request(format!(
            "exec needs a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket, Sec-WebSocket-Key) with subprotocol {}",
            PROTOCOLS[0]
        ))),
    }
}

type AgentSocket = WebSocketStream<tokio::net::TcpStream>;

/// Opens the WebSocket to the agent offering `protocols`; returns it and the one chosen.
async fn dial(url: &str, protocols: &[String], agent: &str) -> ApiResult<(AgentSocket, String)> {
    let mut request = url
        .into_client_request()
        .map_err(|e| ApiError::internal(format!("bad node agent URL {url}: {e}")))?;
    let offered = HeaderValue::from_str(&protocols.join(", "))
        .map_err(|e| ApiError::internal(format!("WebSocket subprotocols: {e}")))?;
    request
        .headers_mut()
        .insert(header::SEC_WEBSOCKET_PROTOCOL, offered);
    let authority = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let unreachable = |e: String| {
        ApiError::new(
            502,
            "InternalError",
            format!("could not reach {agent} ({authority}) for exec: {e}"),
        )
    };
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(authority.as_str()),
    )
    .await
    .map_err(|_| unreachable(format!("no connection within {CONNECT_TIMEOUT:?}")))?
    .map_err(|e| unreachable(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let handshake = tokio_tungstenite::client_async(request, tcp);
    let (ws, resp) = match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
        Err(_) => return Err(unreachable("no WebSocket handshake in time".into())),
        Ok(Ok(x)) => x,
        Ok(Err(tungstenite::Error::Http(resp))) => {
            let code = resp.status().as_u16();
            let text = resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).trim().to_string())
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| format!("{agent} refused exec with status {code}"));
            let reason = match code {
                400 => "BadRequest",
                404 => "NotFound",
                503 => "ServiceUnavailable",
                _ => "InternalError",
            };
            return Err(ApiError::new(code, reason, text));
        }
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
    };
    let chosen = resp
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .filter(|p| protocols.contains(p))
        .ok_or_else(|| {
            unreachable(format!(
                "it accepted none of the subprotocols {}",
                protocols.join(", ")
            ))
        })?;
    Ok((ws, chosen))
}

/// Relays data messages both ways until either side closes or goes away; a close is
/// passed on. Pings are answered by each connection itself, not relayed.
pub async fn relay<A, B>(client: WebSocketStream<A>, agent: WebSocketStream<B>)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_tx, mut client_rx) = client.split();
    let (mut agent_tx, mut agent_rx) = agent.split();
    tokio::select! {
        () = forward(&mut client_rx, &mut agent_tx) => {}
        () = forward(&mut agent_rx, &mut client_tx) => {}
    }
    // Finish both closing handshakes, briefly: the peers may already be gone.
    let _ = tokio::time::timeout(Duration::from_secs(1), client_tx.close()).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), agent_tx.close()).await;
}

async fn forward<R, W>(rx: &mut R, tx: &mut W)
where
    R: futures::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
    W: futures::Sink<Message, Error = tungstenite::Error> + Unpin,
{
    while let Some(Ok(m)) = rx.next().await {
        match m {
            Message::Binary(_) | Message::Text(_) => {
                if tx.send(m).await.is_err() {
                    return;
                }
            }
            Message::Close(frame) => {
                let _ = tx.send(Message::Close(frame)).await;
                return;
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_exec_options() {
        let o = ExecOptions::parse(
            "command=sh&command=-c&command=echo%20a%26b&container=app&stdin=true&stdout=true&tty=true",
        )
        .unwrap();
        assert_eq!(o.command, ["sh", "-c", "echo a&b"]);
        assert_eq!(o.container.as_deref(), Some("app"));
        assert!(o.stdin && o.stdout && !o.stderr && o.tty);
        assert_eq!(
            o.agent_query(),
            "command=sh&command=-c&command=echo+a%26b&stdin=true&stdout=true&tty=true"
        );
        for (q, want) in [
            ("stdout=true", "at least one command"),
            ("command=ls", "at least 1 of stdin, stdout, stderr"),
            ("command=ls&stdout=please", "invalid value"),
        ] {
            let e = ExecOptions::parse(q).unwrap_err();
            assert_eq!(e.code, 400);
            assert!(e.message.contains(want), "{q}: {}", e.message);
        }
    }

    #[test]
    fn chooses_containers_like_the_api_server() {
        let pod = json!({"spec": {
            "containers": [{"name": "web"}, {"name": "sidecar"}],
            "initContainers": [{"name": "setup"}],
            "nodeName": "n1",
        }});
        assert_eq!(choose_container(&pod, "p", Some("setup")).unwrap(), "setup");
        let e = choose_container(&pod, "p", Some("db")).unwrap_err();
        assert_eq!(e.message, "container db is not valid for pod p");
        let e = choose_container(&pod, "p", None).unwrap_err();
        assert_eq!(
            e.message,
            "a container name must be specified for pod p, choose one of: [web sidecar]"
        );
        let single = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(choose_container(&single, "p", None).unwrap(), "only");
        assert_eq!(node_name(&pod, "p").unwrap(), "n1");
        assert_eq!(
            node_name(&single, "p").unwrap_err().message,
            "pod p does not have a host assigned"
        );
    }

    #[test]
    fn agent_addresses() {
        let node = json!({"status": {
            "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10300}},
        }});
        assert_eq!(agent_address(&node, "n1").unwrap(), "10.0.0.5:10300");
        let v6 = json!({"status": {"addresses": [{"type": "InternalIP", "address": "fd00::5"}]}});
        assert_eq!(agent_address(&v6, "n1").unwrap(), "[fd00::5]:10250");
        let none = json!({"status": {}});
        assert_eq!(
            agent_address(&none, "n1").unwrap_err().message,
            "node n1 has no InternalIP address"
        );
    }

    #[test]
    fn only_websocket_upgrades_are_accepted() {
        let mut h = HeaderMap::new();
        assert!(websocket_key(&h)
            .unwrap_err()
            .message
            .contains("WebSocket upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        assert!(websocket_key(&h).unwrap_err().message.contains("SPDY"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("abc=="));
        assert_eq!(websocket_key(&h).unwrap(), "abc==");
    }
}
