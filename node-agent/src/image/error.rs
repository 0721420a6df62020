//! [`ImageError`]: everything that can go wrong in the image store, by what a caller
//! decides on.
//!
//! The error is `Clone` (causes are behind `Arc`) because one pull is shared by every
//! task that asked for the same image at the same time: each of them receives the
//! outcome.

use std::path::PathBuf;
use std::sync::Arc;

/// An image store failure. [`ImageError::reason`] maps it to the kubelet's waiting
/// reason for a container whose image could not be made ready.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageError {
    /// The reference does not parse as `[registry/]repository[:tag][@sha256:digest]`.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The pull policy is `Never` and the image is not in the local store.
    #[error("image {reference} is not present locally and the pull policy is Never")]
    NeverPull {
        /// The normalized reference.
        reference: String,
    },

    /// The image is not in the local store (`remove`, `get`-based operations).
    #[error("image {reference} is not in the local store")]
    NotPresent {
        /// The normalized reference.
        reference: String,
    },

    /// The registry answered that the repository, tag or digest does not exist.
    #[error("image {reference} not found in its registry: {detail}")]
    NotFound {
        /// The normalized reference.
        reference: String,
        /// What the registry said.
        detail: String,
    },

    /// The registry refused or failed a request (HTTP status, authentication).
    #[error("registry error for {reference}: {message}")]
    Registry {
        /// The normalized reference.
        reference: String,
        /// The request and the registry's answer.
        message: String,
    },

    /// The registry could not be reached or the transfer broke off.
    #[error("cannot reach the registry for {reference} ({url}): {detail}")]
    Transport {
        /// The normalized reference.
        reference: String,
        /// The URL requested.
        url: String,
        /// The error and its causes, outermost first (`connection refused`, a TLS
        /// certificate problem, a timeout).
        detail: String,
        /// The HTTP client's error.
        #[source]
        source: Arc<reqwest::Error>,
    },

    /// Content did not hash to the digest that names it: a corrupt or tampered blob,
    /// layer or archive. Nothing of it was kept.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Which blob or layer.
        what: String,
        /// The digest that names the content.
        expected: String,
        /// The digest of what was received.
        actual: String,
    },

    /// A well-formed image that this store cannot use (media type, no linux build for
    /// this architecture, foreign layers, too many layers for one overlay mount).
    #[error("unsupported image {what}: {reason}")]
    Unsupported {
        /// The image or the part of it.
        what: String,
        /// Why.
        reason: String,
    },

    /// Malformed input: an archive, layout, manifest or configuration that does not
    /// follow the OCI or Docker formats.
    #[error("invalid image data in {what}: {reason}")]
    Invalid {
        /// The file, blob or archive.
        what: String,
        /// What is wrong.
        reason: String,
    },

    /// A layer or archive entry tried to write outside its directory (`..`, a path
    /// through a symlink, a hard link to outside). The whole layer is refused.
    #[error("refusing {what}: entry {entry:?} {reason}")]
    UnsafePath {
        /// The layer or archive.
        what: String,
        /// The offending entry's path.
        entry: String,
        /// How it escapes.
        reason: String,
    },

    /// Mounting or unmounting a container's root filesystem failed.
    #[error("{action} {dir}: {source}")]
    Mount {
        /// `"cannot mount overlay on"` or `"cannot unmount"`.
        action: &'static str,
        /// The mount point.
        dir: PathBuf,
        /// The system call's error.
        #[source]
        source: nix::Error,
    },

    /// A file system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The cause.
        #[source]
        source: Arc<std::io::Error>,
    },
}

impl ImageError {
    /// The kubelet's waiting reason for a container whose image failed this way:
    /// `"InvalidImageName"`, `"ErrImageNeverPull"`, `"CreateContainerError"` for a
    /// rootfs mount failure, `"ErrImagePull"` for everything else. (`"ImagePullBackOff"`
    /// is the agent's to report between retries.)
    pub fn reason(&self) -> &'static str {
        match self {
            ImageError::InvalidReference { .. } => "InvalidImageName",
            ImageError::NeverPull { .. } => "ErrImageNeverPull",
            ImageError::Mount { .. } => "CreateContainerError",
            ImageError::NotPresent { .. }
            | ImageError::NotFound { .. }
            | ImageError::Registry { .. }
            | ImageError::Transport { .. }
            | ImageError::DigestMismatch { .. }
            | ImageError::Unsupported { .. }
            | ImageError::Invalid { .. }
            | ImageError::UnsafePath { .. }
            | ImageError::Io { .. } => "ErrImagePull",
        }
    }

    /// An [`ImageError::Io`] with its context.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ImageError::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    /// An [`ImageError::Invalid`].
    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        ImageError::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

/// Adds a context to an `io::Result`, turning it into an [`ImageError::Io`].
pub(crate) trait IoContext<T> {
    /// Wraps the error with `context()`, computed only on failure.
    fn ctx<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T, ImageError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T, ImageError> {
        self.map_err(|e| ImageError::io(context(), e))
    }
}
