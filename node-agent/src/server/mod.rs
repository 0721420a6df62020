//! The agent's HTTP endpoint: the part of the kubelet API the API server calls.
//!
//! ```text
//! GET       /healthz                                   "ok"
//! GET       /containerLogs/{ns}/{pod}/{container}?…    text/plain, streamed (kubectl logs)
//! GET|POST  /exec/{ns}/{pod}/{container}?command=…     WebSocket, v5/v4.channel.k8s.io
//! ```
//!
//! What a pod's containers are is not known here: a [`PodLookup`] (the agent's runtime)
//! answers where a container's log is and how to run a command in it. Errors are plain
//! text with the HTTP status the API server passes on to `kubectl`.
//!
//! # Layout
//! - [`container_logs`]: the `containerLogs` query parameters and the streamed answer.
//! - [`exec`]: the channel protocol over the WebSocket and the exec session.
//! - [`pty`]: a pseudo-terminal for `exec --tty`.

pub mod container_logs;
pub mod exec;
pub mod pty;

use std::future::IntoFuture;
use std::path::PathBuf;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::logs::reader::Exited;

/// Log streams served at once; more get 503 (each follower polls a file).
pub const MAX_LOG_STREAMS: usize = 256;
/// Exec sessions at once; more get 503 (each is a process and a pty or pipes).
pub const MAX_EXEC_SESSIONS: usize = 64;
/// How long [`serve`] waits, after shutdown, for connections to finish.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// What the server needs to know about the pods on this node.
pub trait PodLookup: Send + Sync + 'static {
    /// The container's log: the current attempt's, or with `previous` the last
    /// terminated attempt's.
    ///
    /// # Errors
    /// [`LookupError::NotFound`] for an unknown pod or container or no previous attempt;
    /// the message is shown to the user as it is.
    fn container_log(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Result<ContainerLog, LookupError>;

    /// A command that runs `cmd` inside the container (for runc:
    /// `runc --root … exec [--tty] <id> cmd…`). The server sets its stdin, stdout and
    /// stderr (pipes, or a pty with `tty`) and kills it when the client goes away.
    ///
    /// # Errors
    /// [`LookupError::NotFound`] for an unknown or not running container,
    /// [`LookupError::BadRequest`] for a command it refuses.
    fn exec_command(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        cmd: &[String],
        tty: bool,
    ) -> Result<tokio::process::Command, LookupError>;
}

/// Where a container's log is and whether more may come.
#[derive(Clone, Debug)]
pub struct ContainerLog {
    /// The attempt's log file (`…/<container>/<restart_count>.log`); its rotated
    /// predecessors are found next to it.
    pub path: PathBuf,
    /// The container still runs: `follow` keeps reading.
    pub running: bool,
    /// Turns true (or its sender is dropped) when a running container exits, which
    /// ends a follow once the file is drained. `None` with `running`: a follow ends only
    /// when the client goes away.
    pub exited: Option<Exited>,
}

/// A [`PodLookup`] answer other than a result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// 404 with this message.
    #[error("{0}")]
    NotFound(String),
    /// 400 with this message.
    #[error("{0}")]
    BadRequest(String),
}

/// An error answered as `text/plain` with its status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HttpError {
    pub status: StatusCode,
    pub message: String,
}

impl HttpError {
    pub fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> HttpError {
        HttpError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
        }
    }
}

impl From<LookupError> for HttpError {
    fn from(e: LookupError) -> HttpError {
        match e {
            LookupError::NotFound(message) => HttpError {
                status: StatusCode::NOT_FOUND,
                message,
            },
            LookupError::BadRequest(message) => HttpError::bad_request(message),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", self.message),
        )
            .into_response()
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct Shared {
    pub lookup: Arc<dyn PodLookup>,
    /// Ends log follows and exec sessions.
    pub shutdown: CancellationToken,
    /// Exec sessions (they outlive their request: the WebSocket is upgraded).
    pub sessions: TaskTracker,
    log_streams: Arc<Semaphore>,
    exec_sessions: Arc<Semaphore>,
}

/// The routes, for [`serve`] or a test. Exec sessions are spawned on `sessions`.
pub fn router(
    lookup: Arc<dyn PodLookup>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
) -> Router {
    let shared = Shared {
        lookup,
        shutdown,
        sessions,
        log_streams: Arc::new(Semaphore::new(MAX_LOG_STREAMS)),
        exec_sessions: Arc::new(Semaphore::new(MAX_EXEC_SESSIONS)),
    };
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/containerLogs/{ns}/{pod}/{container}",
            get(container_logs::handle),
        )
        .route(
            "/exec/{ns}/{pod}/{container}",
            get(exec::handle).post(exec::handle),
        )
        .fallback(|| async {
            HttpError {
                status: StatusCode::NOT_FOUND,
                message: "no such endpoint on this node agent (it serves /healthz, \
                          /containerLogs/{ns}/{pod}/{container} and /exec/{ns}/{pod}/{container})"
                    .into(),
            }
        })
        .with_state(shared)
}

/// Serves until `shutdown` is cancelled, then ends the log streams and exec sessions
/// (killing their processes) and waits for them.
///
/// # Errors
/// Accepting connections failed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    lookup: Arc<dyn PodLookup>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let sessions = TaskTracker::new();
    let app = router(lookup, shutdown.clone(), sessions.clone());
    let stop = shutdown.clone();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .into_future();
    // Log streams end on shutdown, but a client that stopped reading keeps its
    // connection busy; it gets SHUTDOWN_GRACE, then is left to the process's exit.
    let grace = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let served = tokio::select! {
        r = served => r,
        () = grace => {
            tracing::warn!("node agent HTTP connections still open {SHUTDOWN_GRACE:?} after shutdown; not waiting for them");
            Ok(())
        }
    };
    sessions.close();
    sessions.wait().await;
    served.map_err(|e| anyhow::anyhow!("the node agent's HTTP server failed: {e}"))
}
