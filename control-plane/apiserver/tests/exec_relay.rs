//! The `pods/exec` relay between two in-process WebSocket endpoints: a client as
//! kubectl opens it, and a fake node agent speaking the channel protocol. (Starting a
//! whole API server needs the store; the pod and node checks are unit-tested in
//! `exec.rs`.)

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use skiff_apiserver::exec::proxy;
use skiff_apiserver::rest::error_response;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request as WsRequest};
use tokio_tungstenite::tungstenite::http::{HeaderValue, Response as HttpResponse};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// What the fake agent saw of one session.
#[derive(Debug)]
enum Seen {
    Path(String),
    Closed,
}

/// A fake node agent: checks the subprotocol, echoes stdin to stdout, and on v5's
/// close-stdin sends a Success status and closes. Requests for container `gone` get 404.
// tungstenite's handshake callback returns its (large) error response by value.
#[allow(clippy::result_large_err)]
async fn fake_agent() -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let seen = tx.clone();
                let callback = move |req: &WsRequest, mut resp: HttpResponse<()>| {
                    let path = req.uri().to_string();
                    let _ = seen.send(Seen::Path(path.clone()));
                    if path.contains("/gone?") {
                        let mut e = ErrorResponse::new(Some(
                            "container \"gone\" is not running in pod web".into(),
                        ));
                        *e.status_mut() =
                            tokio_tungstenite::tungstenite::http::StatusCode::NOT_FOUND;
                        return Err(e);
                    }
                    let offered = req
                        .headers()
                        .get("Sec-WebSocket-Protocol")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    assert!(offered.contains("v5.channel.k8s.io"), "{offered}");
                    resp.headers_mut().insert(
                        "Sec-WebSocket-Protocol",
                        HeaderValue::from_static("v5.channel.k8s.io"),
                    );
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    match m {
                        Message::Binary(d) if d.first() == Some(&0) => {
                            let mut out = d.to_vec();
                            out[0] = 1;
                            ws.send(Message::Binary(out.into())).await.unwrap();
                        }
                        Message::Binary(d) if d[..] == [255, 0] => {
                            let status = br#"{"metadata":{},"status":"Success"}"#;
                            let mut out = vec![3];
                            out.extend_from_slice(status);
                            ws.send(Message::Binary(out.into())).await.unwrap();
                            ws.close(None).await.unwrap();
                        }
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
                let _ = tx.send(Seen::Closed);
            });
        }
    });
    (addr, rx)
}

/// An HTTP server whose exec route relays to `agent` (as `pod_exec` does once the pod
/// and node are checked).
async fn relay_server(agent: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/api/v1/namespaces/{ns}/pods/{pod}/exec",
        axum::routing::any(move |req: Request| {
            let agent = agent.clone();
            async move {
                let container = if req.uri().query().unwrap_or("").contains("container=gone") {
                    "gone"
                } else {
                    "app"
                };
                let url = format!(
                    "{agent}/exec/default/web/{container}?command=cat&stdin=true&stdout=true"
                );
                let r: Response = match proxy(req, &url, "the node agent on n1").await {
                    Ok(r) => r,
                    Err(e) => error_response(&e),
                };
                r
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn exec_request(
    addr: SocketAddr,
    query: &str,
    protocol: &'static str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut req = format!("ws://{addr}/api/v1/namespaces/default/pods/web/exec?{query}")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocol));
    req
}

#[tokio::test]
async fn frames_are_relayed_both_ways_until_the_agent_closes() {
    let (agent, mut seen) = fake_agent().await;
    let server = relay_server(format!("ws://{agent}")).await;
    let req = exec_request(
        server,
        "command=cat&stdin=true&stdout=true",
        "v5.channel.k8s.io",
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        resp.headers().get("Sec-WebSocket-Protocol").unwrap(),
        "v5.channel.k8s.io"
    );
    match seen.recv().await.unwrap() {
        Seen::Path(p) => assert_eq!(
            p,
            "/exec/default/web/app?command=cat&stdin=true&stdout=true"
        ),
        other => panic!("{other:?}"),
    }
    ws.send(Message::Binary(Bytes::from_static(b"\x00hello")))
        .await
        .unwrap();
    let echo = ws.next().await.unwrap().unwrap();
    assert_eq!(echo, Message::Binary(Bytes::from_static(b"\x01hello")));
    // Pings are answered by the relay's own connection, not passed on.
    ws.send(Message::Ping(Bytes::from_static(b"hb")))
        .await
        .unwrap();
    ws.send(Message::Binary(Bytes::from_static(&[255, 0])))
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = async {
        while let Some(Ok(m)) = ws.next().await {
            got.push(m);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("the relay closes when the agent does");
    assert!(
        got.contains(&Message::Pong(Bytes::from_static(b"hb"))),
        "{got:?}"
    );
    let status = got
        .iter()
        .find_map(|m| match m {
            Message::Binary(d) if d[0] == 3 => Some(d[1..].to_vec()),
            _ => None,
        })
        .expect("a status");
    assert_eq!(status, br#"{"metadata":{},"status":"Success"}"#);
    assert!(matches!(got.last(), Some(Message::Close(_))), "{got:?}");
}

#[tokio::test]
async fn a_client_that_goes_away_closes_the_agent_side() {
    let (agent, mut seen) = fake_agent().await;
    let server = relay_server(format!("ws://{agent}")).await;
    let req = exec_request(
        server,
        "command=cat&stdin=true&stdout=true",
        "v5.channel.k8s.io",
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert!(matches!(seen.recv().await, Some(Seen::Path(_))));
    ws.close(None).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), seen.recv()).await;
    assert!(matches!(closed, Ok(Some(Seen::Closed))), "{closed:?}");
}

fn http_error(e: WsError) -> (u16, String) {
    match e {
        WsError::Http(resp) => (
            resp.status().as_u16(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        other => panic!("not an HTTP error: {other}"),
    }
}

#[tokio::test]
async fn refusals_reach_the_client_as_status_errors() {
    let (agent, _seen) = fake_agent().await;
    let server = relay_server(format!("ws://{agent}")).await;

    // The agent refuses: its status and message, before any upgrade.
    let req = exec_request(server, "container=gone", "v5.channel.k8s.io");
    let (code, body) = http_error(tokio_tungstenite::connect_async(req).await.unwrap_err());
    assert_eq!(code, 404);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "NotFound");
    assert_eq!(
        status["message"],
        "container \"gone\" is not running in pod web"
    );

    // A subprotocol the relay does not speak.
    let req = exec_request(server, "", "base64.channel.k8s.io");
    let (code, body) = http_error(tokio_tungstenite::connect_async(req).await.unwrap_err());
    assert_eq!(code, 400);
    assert!(body.contains("v5.channel.k8s.io"), "{body}");

    // The agent is not there.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone = closed.local_addr().unwrap();
    drop(closed);
    let server = relay_server(format!("ws://{gone}")).await;
    let req = exec_request(server, "", "v5.channel.k8s.io");
    let (code, body) = http_error(tokio_tungstenite::connect_async(req).await.unwrap_err());
    assert_eq!(code, 502);
    assert!(
        body.contains("could not reach the node agent on n1"),
        "{body}"
    );
}

#[tokio::test]
async fn spdy_is_refused_with_a_reason() {
    let (agent, _seen) = fake_agent().await;
    let server = relay_server(format!("ws://{agent}")).await;
    let mut tcp = tokio::net::TcpStream::connect(server).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(
        b"POST /api/v1/namespaces/default/pods/web/exec?command=ls&stdout=true HTTP/1.1\r\n\
          Host: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
          X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("SPDY is not supported"), "{text}");
}
