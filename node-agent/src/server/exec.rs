//! `GET|POST /exec/{ns}/{pod}/{container}?command=…&stdin=1&stdout=1&stderr=1&tty=1`:
//! runs a command in a container over a WebSocket speaking the Kubernetes channel
//! protocol (`v5.channel.k8s.io`, or `v4.channel.k8s.io`).
//!
//! Every binary message starts with a channel byte:
//!
//! ```text
//!  0  stdin    client → agent   bytes for the command's stdin
//!  1  stdout   agent → client
//!  2  stderr   agent → client   (never with a tty: the terminal merges it into stdout)
//!  3  error    agent → client   one metav1.Status when the command has ended, then close
//!  4  resize   client → agent   {"Width":80,"Height":24}: the tty's new size
//! 255 close    client → agent   (v5) [255, 0]: stdin is over, close the command's stdin
//! ```
//!
//! A session ends when the command has exited and its output is read, or when the
//! client goes away or the agent shuts down: then the command is stopped (SIGHUP and
//! SIGTERM, SIGKILL after [`STOP_GRACE`]).

use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use super::pty::{Controller, Pty};
use super::{HttpError, Shared};

/// The subprotocols spoken, preferred first. (kubectl ≥ 1.30 offers only v5.)
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// Channel numbers.
pub mod channel {
    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    pub const ERROR: u8 = 3;
    pub const RESIZE: u8 = 4;
    /// v5: the client closes one of its streams (the next byte says which).
    pub const CLOSE: u8 = 255;
}

/// Once the command has exited, output still arriving is forwarded; a stream silent
/// for this long is given up (a background process may hold it open forever).
pub const DRAIN_IDLE: Duration = Duration::from_secs(2);

/// How long a command whose client went away gets to exit on SIGHUP and SIGTERM
/// before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// Output is read and sent in pieces of at most this many bytes.
const CHUNK: usize = 32 * 1024;

/// What an exec request asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecRequest {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

fn flag(key: &str, v: &str) -> Result<bool, HttpError> {
    match v {
        "" | "1" | "true" | "True" | "TRUE" => Ok(true),
        "0" | "false" | "False" | "FALSE" => Ok(false),
        _ => Err(HttpError::bad_request(format!(
            "invalid value {v:?} for {key}: expected true or false"
        ))),
    }
}

/// Parses the query string of an exec request (`command` once per argument).
///
/// # Errors
/// 400 without a command, with none of stdin, stdout and stderr, or with a malformed
/// flag.
pub fn parse_query(query: &str) -> Result<ExecRequest, HttpError> {
    let mut r = ExecRequest::default();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "command" => r.command.push(v.into_owned()),
            "stdin" => r.stdin = flag(&k, &v)?,
            "stdout" => r.stdout = flag(&k, &v)?,
            "stderr" => r.stderr = flag(&k, &v)?,
            "tty" => r.tty = flag(&k, &v)?,
            _ => {}
        }
    }
    if r.command.is_empty() {
        return Err(HttpError::bad_request(
            "you must specify at least one command for the container (command=…, once per argument)",
        ));
    }
    if !(r.stdin || r.stdout || r.stderr) {
        return Err(HttpError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    // As the kubelet does: a terminal has no separate stderr.
    r.stderr &= !r.tty;
    Ok(r)
}

/// How a session ended, for the `Status` on the error channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The command exited with this code (128 + n when killed by signal n).
    Exited(i32),
    /// It could not be run.
    Failed(String),
}

impl Outcome {
    fn of(status: ExitStatus) -> Outcome {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(c), _) => Outcome::Exited(c),
            (None, Some(s)) => Outcome::Exited(128 + s),
            (None, None) => Outcome::Failed(format!("the command ended abnormally: {status}")),
        }
    }

    /// The `metav1.Status` the kubelet sends on the error channel.
    pub fn status(&self, command: &[String]) -> serde_json::Value {
        match self {
            Outcome::Exited(0) => json!({"metadata": {}, "status": "Success"}),
            Outcome::Exited(code) => json!({
                "metadata": {},
                "status": "Failure",
                "message": format!(
                    "command terminated with non-zero exit code: command {command:?} exited with {code}"
                ),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            }),
            Outcome::Failed(message) => json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("Internal error occurred: {message}"),
                "reason": "InternalError",
                "details": {"causes": [{"message": message}]},
                "code": 500,
            }),
        }
    }
}

/// The handler: checks the request, asks the lookup for the command, upgrades.
pub async fn handle(
    State(shared): State<Shared>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, HttpError> {
    let req = parse_query(query.as_deref().unwrap_or(""))?;
    let cmd = shared
        .lookup
        .exec_command(&ns, &pod, &container, &req.command, req.tty)?;
    let ws = ws.map_err(|e| {
        HttpError::bad_request(format!(
            "exec needs a WebSocket upgrade with subprotocol {} ({e}); this node agent does not speak SPDY",
            PROTOCOLS.join(" or ")
        ))
    })?;
    let ws = ws.protocols(PROTOCOLS);
    let Some(protocol) = ws.selected_protocol().cloned() else {
        let offered: Vec<String> = ws
            .requested_protocols()
            .filter_map(|p| p.to_str().ok().map(String::from))
            .collect();
        return Err(HttpError::bad_request(format!(
            "none of the offered WebSocket subprotocols [{}] is supported; this node agent speaks {}",
            offered.join(", "),
            PROTOCOLS.join(", ")
        )));
    };
    let permit = shared
        .exec_sessions
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            HttpError::unavailable(format!(
                "this node agent already runs {} exec sessions; try again later",
                super::MAX_EXEC_SESSIONS
            ))
        })?;
    let session = Session {
        req,
        v5: protocol == PROTOCOLS[0],
        shutdown: shared.shutdown.clone(),
        _permit: permit,
    };
    // Held until the session ends, so that `serve` waits for it on shutdown.
    let tracked = shared.sessions.token();
    let target = format!("{ns}/{pod}/{container}");
    Ok(ws
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "exec upgrade failed"))
        .on_upgrade(move |socket| async move {
            tracing::debug!(%target, command = ?session.req.command, tty = session.req.tty, "exec session");
            session.run(socket, cmd).await;
            drop(tracked);
        }))
}

/// One exec: the request, and what bounds it.
struct Session {
    req: ExecRequest,
    v5: bool,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
}

/// Where the client's input goes.
struct Input {
    stdin: Option<Stdin>,
    /// The tty and the process to tell of a resize.
    tty: Option<(Arc<Controller>, Option<u32>)>,
    v5: bool,
}

enum Stdin {
    Pipe(ChildStdin),
    Tty(Arc<Controller>),
}

impl Session {
    async fn run(self, socket: WebSocket, mut cmd: Command) {
        let (sink, stream) = socket.split();
        let (tx, rx) = mpsc::channel::<Message>(16);
        let writer = tokio::spawn(write_messages(sink, rx));
        let outcome = if self.shutdown.is_cancelled() {
            Outcome::Failed("the node agent is shutting down".into())
        } else {
            match self.start(&mut cmd) {
                Err(e) => Outcome::Failed(format!(
                    "could not run {:?} in the container: {e}",
                    self.req.command
                )),
                Ok(started) => {
                    drop(cmd); // closes the parent's copies of the child's stdio
                    match self.supervise(started, stream, &tx).await {
                        Some(o) => o,
                        None => {
                            // The client went away or the agent stops: nobody to tell.
                            writer.abort();
                            return;
                        }
                    }
                }
            }
        };
        let status = outcome.status(&self.req.command).to_string();
        let mut msg = vec![channel::ERROR];
        msg.extend_from_slice(status.as_bytes());
        let _ = tx.send(Message::Binary(Bytes::from(msg))).await;
        drop(tx);
        self.finish(writer).await;
    }

    /// Waits for the writer to send what is queued; a client too slow to take it does
    /// not hold up the agent's shutdown for more than a second.
    async fn finish(&self, mut writer: tokio::task::JoinHandle<()>) {
        tokio::select! {
            _ = &mut writer => return,
            () = self.shutdown.cancelled() => {}
        }
        if tokio::time::timeout(Duration::from_secs(1), &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
    }

    /// Spawns the command with pipes or a pty as asked.
    fn start(&self, cmd: &mut Command) -> std::io::Result<Started> {
        cmd.kill_on_drop(true);
        if self.req.tty {
            let pty = Pty::open()?;
            let stdio = pty.stdio()?;
            cmd.stdin(stdio.stdin)
                .stdout(stdio.stdout)
                .stderr(stdio.stderr);
            let child = cmd.spawn()?;
            let controller = Arc::new(pty.into_controller()?);
            Ok(Started {
                child,
                tty: Some(controller),
            })
        } else {
            let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
            cmd.stdin(pipe(self.req.stdin))
                .stdout(pipe(self.req.stdout))
                .stderr(pipe(self.req.stderr));
            Ok(Started {
                child: cmd.spawn()?,
                tty: None,
            })
        }
    }

    /// Relays until the command has exited and its output is forwarded (`Some`), or the
    /// client has gone or the agent stops (`None`; the command is killed).
    async fn supervise(
        &self,
        started: Started,
        stream: futures::stream::SplitStream<WebSocket>,
        tx: &mpsc::Sender<Message>,
    ) -> Option<Outcome> {
        let Started { mut child, tty } = started;
        let (exited_tx, exited) = watch::channel(false);
        let mut pumps = Vec::new();
        let input = match &tty {
            Some(c) => {
                let out = TtyReader(c.clone());
                pumps.push(tokio::spawn(pump(
                    out,
                    self.req.stdout.then_some(channel::STDOUT),
                    tx.clone(),
                    exited.clone(),
                )));
                Input {
                    stdin: self.req.stdin.then(|| Stdin::Tty(c.clone())),
                    tty: Some((c.clone(), child.id())),
                    v5: self.v5,
                }
            }
            None => {
                if let Some(out) = child.stdout.take() {
                    pumps.push(tokio::spawn(pump(
                        out,
                        Some(channel::STDOUT),
                        tx.clone(),
                        exited.clone(),
                    )));
                }
                if let Some(err) = child.stderr.take() {
                    pumps.push(tokio::spawn(pump(
                        err,
                        Some(channel::STDERR),
                        tx.clone(),
                        exited.clone(),
                    )));
                }
                Input {
                    stdin: child.stdin.take().map(Stdin::Pipe),
                    tty: None,
                    v5: self.v5,
                }
            }
        };
        let status = tokio::select! {
            s = child.wait() => s.map_err(|e| format!("waiting for the command: {e}")),
            () = read_input(stream, input) => Err(String::new()),
            () = self.shutdown.cancelled() => Err(String::new()),
        };
        let outcome = match status {
            Ok(s) => Outcome::of(s),
            Err(e) => {
                stop(&mut child).await;
                for p in pumps {
                    p.abort();
                }
                if e.is_empty() {
                    return None;
                }
                return Some(Outcome::Failed(e));
            }
        };
        let _ = exited_tx.send(true);
        // The rest of the output, unless the agent stops (a slow client must not hold
        // up its shutdown).
        let drain = async {
            for p in &mut pumps {
                let _ = p.await;
            }
        };
        tokio::select! {
            () = drain => {}
            () = self.shutdown.cancelled() => {
                for p in &pumps {
                    p.abort();
                }
            }
        }
        Some(outcome)
    }
}

/// Ends a command nobody listens to any more. `runc exec` passes the signals it can
/// catch on to the process in the container, but SIGKILL would only kill runc and leave
/// that process behind; so first a hangup and a SIGTERM (what closing a terminal
/// sends), and SIGKILL only after [`STOP_GRACE`].
async fn stop(child: &mut Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let pid = nix::unistd::Pid::from_raw(pid);
        for sig in [
            nix::sys::signal::Signal::SIGHUP,
            nix::sys::signal::Signal::SIGTERM,
        ] {
            let _ = nix::sys::signal::kill(pid, sig);
        }
    }
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

struct Started {
    child: Child,
    tty: Option<Arc<Controller>>,
}

/// Sends queued messages, then a normal close.
async fn write_messages(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Message>,
) {
    while let Some(m) = rx.recv().await {
        if sink.send(m).await.is_err() {
            return;
        }
    }
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: axum::extract::ws::close_code::NORMAL,
            reason: "".into(),
        })))
        .await;
}

/// Reads the client's messages until it closes or goes away.
async fn read_input(mut stream: futures::stream::SplitStream<WebSocket>, mut input: Input) {
    while let Some(Ok(msg)) = stream.next().await {
        let data = match msg {
            Message::Binary(d) => d,
            Message::Close(_) => return,
            // Pings are answered by the WebSocket layer; text is not part of the protocol.
            _ => continue,
        };
        let Some((&ch, payload)) = data.split_first() else {
            continue;
        };
        match ch {
            channel::STDIN => {
                let ok = match &mut input.stdin {
                    Some(Stdin::Pipe(p)) => p.write_all(payload).await.is_ok(),
                    Some(Stdin::Tty(c)) => c.write_all(payload).await.is_ok(),
                    None => true,
                };
                if !ok {
                    // The command closed its stdin; later input has nowhere to go.
                    input.stdin = None;
                }
            }
            channel::RESIZE => {
                if let Some((c, pid)) = &input.tty {
                    resize(c, *pid, payload);
                }
            }
            channel::CLOSE if input.v5 && payload.first() == Some(&channel::STDIN) => {
                match input.stdin.take() {
                    // Dropping the pipe is its end of file.
                    Some(Stdin::Pipe(p)) => drop(p),
                    // A terminal's end of file is ^D at the start of a line.
                    Some(Stdin::Tty(c)) => {
                        let _ = c.write_all(b"\x04").await;
                    }
                    None => {}
                }
            }
            _ => {}
        }
    }
}

#[derive(serde::Deserialize)]
struct Size {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

fn resize(c: &Controller, pid: Option<u32>, payload: &[u8]) {
    let Ok(size) = serde_json::from_slice::<Size>(payload) else {
        tracing::debug!(payload = %String::from_utf8_lossy(payload), "ignoring a malformed resize message");
        return;
    };
    if let Err(e) = c.resize(size.width, size.height) {
        tracing::debug!(error = %e, "resizing an exec tty");
        return;
    }
    // The command's process group gets SIGWINCH from the kernel only if this is its
    // controlling terminal; runc (which copies the size to the container's own
    // terminal on SIGWINCH) is not a session leader here, so tell it directly.
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGWINCH,
        );
    }
}

/// A pty's controller side as a reader for [`pump`].
struct TtyReader(Arc<Controller>);

/// An output stream of the command.
trait Source: Send + 'static {
    fn read<'a>(
        &'a mut self,
        buf: &'a mut [u8],
    ) -> impl std::future::Future<Output = std::io::Result<usize>> + Send + 'a;
}

impl Source for tokio::process::ChildStdout {
    async fn read<'a>(&'a mut self, buf: &'a mut [u8]) -> std::io::Result<usize> {
        AsyncReadExt::read(self, buf).await
    }
}

impl Source for tokio::process::ChildStderr {
    async fn read<'a>(&'a mut self, buf: &'a mut [u8]) -> std::io::Result<usize> {
        AsyncReadExt::read(self, buf).await
    }
}

impl Source for TtyReader {
    async fn read<'a>(&'a mut self, buf: &'a mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf).await
    }
}

/// Forwards one output stream on `ch` (or discards it with `None`) until its end, or
/// until it has been silent for [`DRAIN_IDLE`] after the command exited.
async fn pump(
    mut src: impl Source,
    ch: Option<u8>,
    tx: mpsc::Sender<Message>,
    mut exited: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; CHUNK + 1];
    let mut over = *exited.borrow();
    loop {
        let n = if over {
            match tokio::time::timeout(DRAIN_IDLE, src.read(&mut buf[1..])).await {
                Ok(r) => r,
                Err(_) => return,
            }
        } else {
            tokio::select! {
                r = src.read(&mut buf[1..]) => r,
                _ = exited.changed() => {
                    over = true;
                    continue;
                }
            }
        };
        let n = match n {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let Some(ch) = ch else { continue };
        buf[0] = ch;
        if tx
            .send(Message::Binary(Bytes::copy_from_slice(&buf[..=n])))
            .await
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands_and_flags() {
        let r = parse_query(
            "command=sh&command=-c&command=echo%20hi%26&stdin=true&stdout=1&stderr=true&tty=false",
        )
        .unwrap();
        assert_eq!(r.command, ["sh", "-c", "echo hi&"]);
        assert!(r.stdin && r.stdout && r.stderr && !r.tty);
        let r = parse_query("command=sh&stdout=true&stderr=true&tty=true").unwrap();
        assert!(r.tty && !r.stderr, "a tty has no stderr");
    }

    #[test]
    fn refuses_incomplete_requests() {
        for (q, want) in [
            ("stdout=true", "at least one command"),
            ("command=ls", "at least 1 of stdin, stdout, stderr"),
            ("command=ls&stdout=yes", "invalid value \"yes\" for stdout"),
        ] {
            let e = parse_query(q).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.contains(want), "{q}: {}", e.message);
        }
    }

    #[test]
    fn statuses_are_the_kubelets() {
        let cmd = vec!["sh".to_string()];
        assert_eq!(
            Outcome::Exited(0).status(&cmd),
            json!({"metadata": {}, "status": "Success"})
        );
        let s = Outcome::Exited(3).status(&cmd);
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(
            s["details"]["causes"][0],
            json!({"reason": "ExitCode", "message": "3"})
        );
        let s = Outcome::Failed("no such file".into()).status(&cmd);
        assert_eq!(s["status"], "Failure");
        assert!(s["message"].as_str().unwrap().contains("no such file"));
    }
}
