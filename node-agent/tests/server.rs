//! The agent's HTTP endpoint over real sockets: `containerLogs` with an HTTP client and
//! `exec` with a WebSocket client speaking `v5.channel.k8s.io`. The test lookup runs
//! exec commands on the host (no runc needed) and serves logs from a temp dir.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use skiff_node_agent::logs::{CriLogWriter, Stream};
use skiff_node_agent::server::{serve, ContainerLog, LookupError, PodLookup};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Pod `default/web` with container `app`: attempt 0 ended, attempt 1 runs.
struct TestPods {
    dir: PathBuf,
    exited: watch::Receiver<bool>,
}

impl PodLookup for TestPods {
    fn container_log(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Result<ContainerLog, LookupError> {
        if (namespace, pod, container) != ("default", "web", "app") {
            return Err(LookupError::NotFound(format!(
                "container {container:?} in pod {namespace}/{pod} is not on this node"
            )));
        }
        Ok(if previous {
            ContainerLog {
                path: self.dir.join("0.log"),
                running: false,
                exited: None,
            }
        } else {
            ContainerLog {
                path: self.dir.join("1.log"),
                running: true,
                exited: Some(self.exited.clone()),
            }
        })
    }

    fn exec_command(
        &self,
        _namespace: &str,
        pod: &str,
        container: &str,
        cmd: &[String],
        _tty: bool,
    ) -> Result<tokio::process::Command, LookupError> {
        if (pod, container) != ("web", "app") {
            return Err(LookupError::NotFound(format!(
                "container {container:?} is not running in pod {pod}"
            )));
        }
        let mut c = tokio::process::Command::new(&cmd[0]);
        c.args(&cmd[1..]);
        Ok(c)
    }
}

struct Agent {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    exited: watch::Sender<bool>,
    dir: tempfile::TempDir,
}

async fn start() -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let (exited, rx) = watch::channel(false);
    let lookup = Arc::new(TestPods {
        dir: dir.path().to_path_buf(),
        exited: rx,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve(listener, lookup, stop.clone()));
    Agent {
        addr,
        stop,
        task,
        exited,
        dir,
    }
}

impl Agent {
    async fn get(&self, path: &str) -> (u16, String) {
        let resp = self.request(path).await;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    async fn request(&self, path: &str) -> hyper::Response<hyper::body::Incoming> {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let uri = format!("http://{}{path}", self.addr).parse().unwrap();
        client.get(uri).await.unwrap()
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
    }
}

fn write_log(path: PathBuf, lines: &[&str]) -> CriLogWriter {
    let mut w = CriLogWriter::open(&path, 1 << 20, 3).unwrap();
    for l in lines {
        w.write(Stream::Stdout, format!("{l}\n").as_bytes())
            .unwrap();
    }
    w
}

#[tokio::test]
async fn healthz_and_unknown_paths() {
    let agent = start().await;
    assert_eq!(agent.get("/healthz").await, (200, "ok".into()));
    let (code, body) = agent.get("/pods").await;
    assert_eq!(code, 404);
    assert!(body.contains("/containerLogs"), "{body}");
    agent.stop().await;
}

#[tokio::test]
async fn logs_tail_previous_and_errors() {
    let agent = start().await;
    let _w = write_log(agent.dir.path().join("1.log"), &["a", "b", "c"]);
    write_log(agent.dir.path().join("0.log"), &["old"])
        .close()
        .unwrap();
    let base = "/containerLogs/default/web/app";
    assert_eq!(
        agent.get(&format!("{base}?tailLines=2")).await,
        (200, "b\nc\n".into())
    );
    assert_eq!(
        agent.get(&format!("{base}?previous=true")).await,
        (200, "old\n".into())
    );
    let (code, body) = agent
        .get(&format!("{base}?timestamps=true&limitBytes=5000"))
        .await;
    assert_eq!(code, 200);
    let first = body.lines().next().unwrap();
    let (ts, text) = first.split_once(' ').unwrap();
    assert!(
        ts.parse::<jiff::Timestamp>().is_ok() && text == "a",
        "{first}"
    );

    let (code, body) = agent.get("/containerLogs/default/web/db").await;
    assert_eq!(code, 404);
    assert!(
        body.contains("container \"db\" in pod default/web"),
        "{body}"
    );
    let (code, body) = agent.get(&format!("{base}?tailLines=-3")).await;
    assert_eq!(code, 400);
    assert!(body.contains("tailLines"), "{body}");
    agent.stop().await;
}

#[tokio::test]
async fn follow_sees_new_lines_and_ends_when_the_container_exits() {
    let agent = start().await;
    let mut w = write_log(agent.dir.path().join("1.log"), &["first"]);
    let resp = agent
        .request("/containerLogs/default/web/app?follow=true")
        .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut wrote = false;
    loop {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("the follow ends in time");
        let Some(frame) = frame else { break };
        if let Ok(data) = frame.unwrap().into_data() {
            seen.push_str(std::str::from_utf8(&data).unwrap());
        }
        if seen == "first\n" && !wrote {
            w.write(Stream::Stdout, b"second\n").unwrap();
            w.write(Stream::Stderr, b"third").unwrap();
            w.flush().unwrap();
            wrote = true;
        }
        if seen.contains("second") {
            // The container exits: its last partial line is closed, then the follow
            // drains the file and ends.
            drop(std::mem::replace(
                &mut w,
                CriLogWriter::open(&agent.dir.path().join("unused.log"), 0, 0).unwrap(),
            ));
            agent.exited.send(true).unwrap();
        }
    }
    assert_eq!(seen, "first\nsecond\nthird\n");
    agent.stop().await;
}

/// A WebSocket exec session as kubectl opens it.
async fn exec(
    agent: &Agent,
    query: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::Error,
> {
    let mut req = format!("ws://{}/exec/default/web/app?{query}", agent.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("v5.channel.k8s.io"),
    );
    let (ws, resp) = tokio_tungstenite::connect_async(req).await?;
    assert_eq!(
        resp.headers().get("Sec-WebSocket-Protocol").unwrap(),
        "v5.channel.k8s.io"
    );
    Ok(ws)
}

/// Everything received per channel until the server closes.
async fn collect<S>(ws: &mut S) -> [Vec<u8>; 4]
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut out: [Vec<u8>; 4] = Default::default();
    let read = async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Binary(d) = m {
                if let Some((&ch, rest)) = d.split_first() {
                    if (ch as usize) < out.len() {
                        out[ch as usize].extend_from_slice(rest);
                    }
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the session ends in time");
    out
}

fn status(raw: &[u8]) -> Value {
    serde_json::from_slice(raw).unwrap_or_else(|e| panic!("{e}: {raw:?}"))
}

fn q(cmd: &[&str], flags: &str) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for c in cmd {
        s.append_pair("command", c);
    }
    format!("{}&{flags}", s.finish())
}

#[tokio::test]
async fn exec_without_tty_separates_streams_and_reports_the_exit_code() {
    let agent = start().await;
    let mut ws = exec(
        &agent,
        &q(
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            "stdout=true&stderr=true",
        ),
    )
    .await
    .unwrap();
    let [_, out, err, st] = collect(&mut ws).await;
    assert_eq!(out, b"out\n");
    assert_eq!(err, b"err\n");
    let st = status(&st);
    assert_eq!(st["status"], "Failure");
    assert_eq!(st["reason"], "NonZeroExitCode");
    assert_eq!(
        st["details"]["causes"][0],
        serde_json::json!({"reason": "ExitCode", "message": "3"})
    );

    let mut ws = exec(&agent, &q(&["true"], "stdout=true")).await.unwrap();
    let [_, out, _, st] = collect(&mut ws).await;
    assert!(out.is_empty());
    assert_eq!(status(&st)["status"], "Success");
    agent.stop().await;
}

#[tokio::test]
async fn exec_stdin_reaches_the_command_and_close_ends_it() {
    let agent = start().await;
    let mut ws = exec(&agent, &q(&["cat"], "stdin=true&stdout=true&stderr=true"))
        .await
        .unwrap();
    ws.send(Message::Binary(Bytes::from_static(b"\x00hello\n")))
        .await
        .unwrap();
    ws.send(Message::Binary(Bytes::from_static(b"\x00world\n")))
        .await
        .unwrap();
    // v5: stdin is over.
    ws.send(Message::Binary(Bytes::from_static(&[255, 0])))
        .await
        .unwrap();
    let [_, out, _, st] = collect(&mut ws).await;
    assert_eq!(out, b"hello\nworld\n");
    assert_eq!(status(&st)["status"], "Success");
    agent.stop().await;
}

#[tokio::test]
async fn exec_with_tty_goes_through_a_terminal_and_resizes_it() {
    let agent = start().await;
    let mut ws = exec(
        &agent,
        &q(
            &[
                "sh",
                "-c",
                "test -t 0 && test -t 1 && echo on-a-tty; read go; stty size",
            ],
            "stdin=true&stdout=true&tty=true",
        ),
    )
    .await
    .unwrap();
    ws.send(Message::Binary(Bytes::from_static(
        b"\x04{\"Width\":100,\"Height\":40}",
    )))
    .await
    .unwrap();
    ws.send(Message::Binary(Bytes::from_static(b"\x00go\n")))
        .await
        .unwrap();
    let [_, out, err, st] = collect(&mut ws).await;
    let out = String::from_utf8_lossy(&out);
    // The terminal turns "\n" into "\r\n" and echoes the input.
    assert!(out.contains("on-a-tty\r\n"), "{out:?}");
    assert!(out.contains("go\r\n"), "{out:?}");
    assert!(out.contains("40 100\r\n"), "{out:?}");
    assert!(err.is_empty());
    assert_eq!(status(&st)["status"], "Success");
    agent.stop().await;
}

#[tokio::test]
async fn exec_refusals_are_http_errors_with_a_message() {
    let agent = start().await;
    let err = |e: tokio_tungstenite::tungstenite::Error| match e {
        tokio_tungstenite::tungstenite::Error::Http(resp) => (
            resp.status().as_u16(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        other => panic!("not an HTTP error: {other}"),
    };
    let mut req = format!(
        "ws://{}/exec/default/web/db?command=ls&stdout=true",
        agent.addr
    )
    .into_client_request()
    .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("v5.channel.k8s.io"),
    );
    let (code, body) = err(tokio_tungstenite::connect_async(req).await.unwrap_err());
    assert_eq!(code, 404);
    assert!(body.contains("container \"db\" is not running"), "{body}");

    let (code, body) = err(exec(&agent, "stdout=true").await.unwrap_err());
    assert_eq!(code, 400);
    assert!(body.contains("at least one command"), "{body}");

    // An old client offering only SPDY-era subprotocols.
    let mut req = format!(
        "ws://{}/exec/default/web/app?command=ls&stdout=1",
        agent.addr
    )
    .into_client_request()
    .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("channel.k8s.io"),
    );
    let (code, body) = err(tokio_tungstenite::connect_async(req).await.unwrap_err());
    assert_eq!(code, 400);
    assert!(body.contains("v5.channel.k8s.io"), "{body}");

    // Not a WebSocket at all (SPDY's POST, or curl).
    let (code, body) = agent
        .get("/exec/default/web/app?command=ls&stdout=true")
        .await;
    assert_eq!(code, 400);
    assert!(body.contains("WebSocket"), "{body}");
    agent.stop().await;
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Starts `sleep` in a session and returns the session and the sleep's pid.
async fn sleeping(
    agent: &Agent,
) -> (
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    i32,
) {
    let mut ws = exec(
        agent,
        &q(&["sh", "-c", "echo $$; exec sleep 30"], "stdout=true"),
    )
    .await
    .unwrap();
    let pid = loop {
        match ws.next().await.unwrap().unwrap() {
            Message::Binary(d) if d[0] == 1 => {
                break std::str::from_utf8(&d[1..])
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap()
            }
            _ => continue,
        }
    };
    assert!(alive(pid));
    (ws, pid)
}

async fn wait_dead(pid: i32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while alive(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pid {pid} still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_command_is_killed_when_the_client_goes_away() {
    let agent = start().await;
    let (ws, pid) = sleeping(&agent).await;
    drop(ws);
    wait_dead(pid).await;

    let (mut ws, pid) = sleeping(&agent).await;
    ws.close(None).await.unwrap();
    wait_dead(pid).await;
    agent.stop().await;
}

#[tokio::test]
async fn shutdown_ends_sessions_and_kills_their_commands() {
    let agent = start().await;
    let (_ws, pid) = sleeping(&agent).await;
    agent.stop().await;
    wait_dead(pid).await;
}

/// Regression: a `kubectl logs -f` whose reader stopped reading kept its connection
/// (and so the graceful shutdown) busy forever.
#[tokio::test]
async fn shutdown_is_not_held_up_by_a_log_client_that_stopped_reading() {
    use tokio::io::AsyncWriteExt;
    let agent = start().await;
    let mut w = write_log(agent.dir.path().join("1.log"), &[]);
    let line = vec![b'x'; 1000];
    for _ in 0..8_000 {
        w.write(Stream::Stdout, &line).unwrap();
        w.write(Stream::Stdout, b"\n").unwrap();
    }
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(agent.addr).await.unwrap();
    tcp.write_all(
        b"GET /containerLogs/default/web/app?follow=true HTTP/1.1\r\nHost: agent\r\n\r\n",
    )
    .await
    .unwrap();
    // Time to fill the socket buffers.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let started = std::time::Instant::now();
    agent.stop().await;
    assert!(started.elapsed() < Duration::from_secs(8));
    drop(tcp);
}

#[tokio::test]
async fn a_command_ignoring_hangup_and_term_is_killed_after_the_grace() {
    let agent = start().await;
    let mut ws = exec(
        &agent,
        &q(
            &[
                "sh",
                "-c",
                "trap '' HUP TERM; echo $$; while :; do sleep 0.1; done",
            ],
            "stdout=true",
        ),
    )
    .await
    .unwrap();
    let pid: i32 = loop {
        if let Message::Binary(d) = ws.next().await.unwrap().unwrap() {
            if d[0] == 1 {
                break std::str::from_utf8(&d[1..])
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
            }
        }
    };
    drop(ws);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(alive(pid), "SIGHUP and SIGTERM are ignored");
    wait_dead(pid).await;
    agent.stop().await;
}
