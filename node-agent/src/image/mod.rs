//! The node's local image store: content-addressed, shared by the agent and the
//! `skiff image` CLI.
//!
//! Images come in by [`ImageStore::pull`] from an OCI distribution registry, by
//! [`ImageStore::import`] of an OCI layout / OCI archive / docker-archive, or by
//! [`build_busybox`] offline. Each layer is unpacked once, keyed by its diff id, into
//! a directory that serves as an overlayfs lower dir for every image that has it;
//! [`ImageStore::mount_rootfs`] stacks them under a container's private upper dir.
//!
//! ```text
//!  registry ──pull──┐                         refs/<name>.json ──┐
//!  oci / archive ───┼─▶ verify sha256 ─▶ blobs/sha256/<config, manifest>
//!  busybox ─────────┘        └──unpack──▶ layers/<diff id>/fs ◀──┘
//!                                               │ lowerdir (highest first)
//!                      <container dir>/rootfs = overlay(upper, work)
//! ```
//!
//! # Layout
//! - [`reference`]: parsing and [`normalize`] (`busybox` → `docker.io/library/busybox:latest`).
//! - `schema.rs`: the on-disk layout and metadata records.
//! - `store.rs`: [`ImageStore`]: lookups, pull-once, commit, removal, garbage collection,
//!   the cross-process lock.
//! - `content.rs`: digests, verified blob writes, atomic files.
//! - `oci.rs`: the OCI / Docker manifest, index and config documents.
//! - `unpack.rs`: a layer tar → an overlay lower dir (whiteouts, path safety).
//! - `import.rs`: OCI layouts and archives, docker-archives.
//! - `registry.rs`: the distribution-spec client (bearer tokens, HTTP/HTTPS).
//! - `rootfs.rs`: overlay mount and unmount.
//! - `busybox.rs`: [`build_busybox`].
//! - `cli.rs`: [`ImageCmd`] and [`run_cli`].
//! - `error.rs`: [`ImageError`] and its kubelet reasons.

mod busybox;
mod cli;
mod content;
mod error;
mod import;
mod oci;
pub mod reference;
mod registry;
mod rootfs;
mod schema;
mod store;
mod unpack;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use busybox::build_busybox;
pub use cli::{run_cli, ImageCmd};
pub use error::ImageError;
pub use reference::normalize;
pub use store::ImageStore;

/// Where the agent whose root directory is `agent_root` keeps its image store:
/// `<agent_root>/images`.
pub fn store_dir(agent_root: &Path) -> PathBuf {
    agent_root.join("images")
}

/// When to contact the registry for a container's image (`imagePullPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Ask the registry every time (re-downloading only what changed).
    Always,
    /// Pull only when the image is not in the local store.
    IfNotPresent,
    /// Never pull; fail with `ErrImageNeverPull` when absent.
    Never,
}

impl PullPolicy {
    /// The policy of a container spec: `policy` as given (`"Always"`, `"IfNotPresent"`,
    /// `"Never"`), or when absent (or unknown) Kubernetes' default for `reference`:
    /// `Always` if the tag is `latest` or there is neither tag nor digest, else
    /// `IfNotPresent` (so a digest-only reference is `IfNotPresent`).
    pub fn from_k8s(policy: Option<&str>, reference: &str) -> PullPolicy {
        match policy {
            Some("Always") => PullPolicy::Always,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            Some("Never") => PullPolicy::Never,
            _ => match reference::Reference::parse(reference) {
                Ok(r) if r.tag.as_deref() == Some("latest") => PullPolicy::Always,
                _ => PullPolicy::IfNotPresent,
            },
        }
    }
}

/// The container defaults an image's config carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `Entrypoint`; empty if unset.
    pub entrypoint: Vec<String>,
    /// `Cmd`; empty if unset.
    pub cmd: Vec<String>,
    /// `Env`, each `"K=V"`.
    pub env: Vec<String>,
    /// `WorkingDir`; `None` if unset or empty.
    pub working_dir: Option<String>,
    /// `User` (`name`, `uid`, `uid:gid`, `name:group`); `None` if unset or empty.
    pub user: Option<String>,
}

/// An image present in the local store, ready to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalImage {
    /// The normalized reference it is stored under.
    pub reference: String,
    /// The image id: `sha256:<hex>` of its config blob.
    pub id: String,
    /// Container defaults.
    pub config: ImageConfig,
    /// The unpacked layer directories, lowest first.
    pub layers: Vec<PathBuf>,
    /// Uncompressed size of its layers, in bytes.
    pub size: u64,
}

impl ImageStore {
    /// Imports every named image at `path`: an OCI image layout directory, an OCI
    /// archive tar (`skopeo copy … oci-archive:FILE:NAME`), or a docker-archive tar
    /// (`docker save`, `skopeo copy … docker-archive:FILE:NAME:TAG`); tars and layers
    /// may be gzip-compressed (layers also zstd). Returns the normalized references
    /// imported. Blocking: call it from `spawn_blocking` in async code.
    ///
    /// Naming rules are in `import.rs`'s module documentation.
    ///
    /// # Errors
    /// [`ImageError::Invalid`] for something that is not an image archive or has no
    /// named image, [`ImageError::DigestMismatch`], [`ImageError::UnsafePath`],
    /// [`ImageError::Unsupported`], [`ImageError::Io`].
    pub fn import(&self, path: &Path) -> Result<Vec<String>, ImageError> {
        import::import(self, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_defaults_like_kubernetes() {
        use PullPolicy::*;
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(PullPolicy::from_k8s(None, "busybox"), Always);
        assert_eq!(PullPolicy::from_k8s(None, "busybox:latest"), Always);
        assert_eq!(PullPolicy::from_k8s(None, "busybox:1.36"), IfNotPresent);
        assert_eq!(
            PullPolicy::from_k8s(None, &format!("busybox@{d}")),
            IfNotPresent
        );
        assert_eq!(
            PullPolicy::from_k8s(None, "127.0.0.1:5000/x:1"),
            IfNotPresent
        );
        assert_eq!(PullPolicy::from_k8s(Some("Never"), "busybox"), Never);
        assert_eq!(PullPolicy::from_k8s(Some("Always"), "busybox:1"), Always);
        assert_eq!(
            PullPolicy::from_k8s(Some("IfNotPresent"), "busybox"),
            IfNotPresent
        );
    }
}
