//! Container runtimes the pod workers drive: runc (real containers, [`real`]) and a
//! simulated one ([`sim`], for `--simulate` scale tests). The worker decides *what*
//! should run; a runtime only does it and reports what happened.

pub mod bundle;
pub mod cni;
pub mod real;
pub mod runc;
pub mod sim;

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Container;

pub use crate::shim::Exited;
use bundle::MountSpec;

/// Which pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (pods of one name come and go; the uid tells them apart).
    pub uid: String,
}

/// The user and permissions a container runs with, resolved from the pod's and the
/// container's securityContext (the container's wins).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Security {
    /// runAsUser (else the image's user, else root).
    pub run_as_user: Option<u32>,
    /// runAsGroup.
    pub run_as_group: Option<u32>,
    /// fsGroup and supplementalGroups.
    pub supplemental_groups: Vec<u32>,
    /// readOnlyRootFilesystem.
    pub read_only_root: bool,
    /// allowPrivilegeEscalation (default true, as in Kubernetes).
    pub allow_privilege_escalation: bool,
    /// privileged.
    pub privileged: bool,
    /// capabilities.add.
    pub capabilities_add: Vec<String>,
    /// capabilities.drop.
    pub capabilities_drop: Vec<String>,
}

/// What the worker asks a runtime to start.
#[derive(Clone, Debug)]
pub struct StartRequest {
    /// The pod.
    pub pod: PodRef,
    /// The container as the pod spec says.
    pub container: Container,
    /// Attempt number (the restart count this attempt will have).
    pub attempt: u32,
    /// The container's own environment, resolved (ConfigMap/Secret refs, field refs);
    /// added after the image's, winning on equal names.
    pub env: Vec<(String, String)>,
    /// Volume mounts (and /etc/hosts, resolv.conf).
    pub mounts: Vec<MountSpec>,
    /// securityContext.
    pub security: Security,
    /// Host name inside the container.
    pub hostname: String,
    /// Its CRI log file.
    pub log_path: PathBuf,
}

/// A started container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    /// Runtime id (`runc://<id>` in status).
    pub id: String,
    /// RFC 3339 start time.
    pub started_at: String,
    /// The image's id (`sha256:…`).
    pub image_id: String,
}

/// Why a container could not be started: a Waiting reason and message, as the
/// kubelet reports them (`ErrImagePull`, `CreateContainerConfigError`,
/// `CreateContainerError`, `RunContainerError`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct StartError {
    /// The Waiting reason.
    pub reason: String,
    /// What went wrong, for a person.
    pub message: String,
}

impl StartError {
    /// A start error with this reason.
    pub fn new(reason: &str, message: impl std::fmt::Display) -> Self {
        StartError {
            reason: reason.to_owned(),
            message: message.to_string(),
        }
    }
}

/// What the runtime knows of a container now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Running since.
    Running,
    /// Ended (exit code, times, OOM).
    Exited(Exited),
    /// The runtime has no such container (gone, or never started).
    Unknown,
}

/// A container the runtime found at startup (for adoption).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Record {
    /// Its pod.
    pub pod: PodRef,
    /// Container name in the pod spec.
    pub container: String,
    /// Attempt (restart count).
    pub attempt: u32,
    /// Runtime id.
    pub id: String,
    /// The image reference it was started from.
    pub image: String,
    /// The image id.
    pub image_id: String,
    /// An init container.
    pub init: bool,
    /// RFC 3339 start time, if it started.
    pub started_at: Option<String>,
}

/// Result of running a command in a container (exec probes).
pub use runc::ExecOutput;

/// What a pod worker needs from a container runtime.
pub trait Runtime: Send + Sync + 'static {
    /// Creates the pod's network namespace and connects it (idempotent: an existing
    /// sandbox's address is returned). The pod's IP.
    fn setup_sandbox(&self, pod: &PodRef) -> impl Future<Output = anyhow::Result<Ipv4Addr>> + Send;

    /// Disconnects and removes the pod's network namespace and its files. Idempotent.
    fn teardown_sandbox(&self, pod: &PodRef) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Pulls the image if needed and starts the container; `init` for init containers.
    fn start(
        &self,
        req: &StartRequest,
        init: bool,
    ) -> impl Future<Output = Result<Running, StartError>> + Send;

    /// The container's state now.
    fn state(&self, pod: &PodRef, id: &str) -> impl Future<Output = State> + Send;

    /// Stops a container: SIGTERM, then SIGKILL after `grace`. Returns when it ended.
    fn stop(&self, pod: &PodRef, id: &str, grace: Duration) -> impl Future<Output = ()> + Send;

    /// Removes a stopped container (runc state, rootfs, bundle). Idempotent.
    fn remove(&self, pod: &PodRef, id: &str) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Runs a command in a running container, bounded by `timeout`.
    fn exec(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> impl Future<Output = anyhow::Result<ExecOutput>> + Send;

    /// The pod's directory for volumes and /etc files; `None` when the runtime has no
    /// filesystem (simulated).
    fn pod_dir(&self, pod: &PodRef) -> Option<std::path::PathBuf>;

    /// Every container the runtime has records of (adoption after a restart).
    fn records(&self) -> Vec<Record>;

    /// Pods (by uid) with sandboxes on this node, from the runtime's records.
    fn sandboxes(&self) -> Vec<PodRef>;
}
