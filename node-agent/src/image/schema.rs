//! The store's on-disk layout: every path and every metadata file, in one place.
//!
//! ```text
//! <root>/                              (the agent's is /var/lib/skiff/agent/images)
//!   lock                               flock: shared while importing/pulling, exclusive
//!                                      to garbage-collect (see `store.rs`)
//!   blobs/sha256/<hex>                 manifests and image configs, named by the sha256
//!                                      of their bytes (verified before the rename)
//!   layers/<diffid-hex>/fs/            one unpacked layer: an overlay lower dir with
//!                                      whiteouts as 0/0 char devices and opaque dirs
//!                                      marked `trusted.overlay.opaque=y`
//!   layers/<diffid-hex>/layer.json     LayerRecord: the diff id and uncompressed size
//!   refs/<escaped reference>.json      RefRecord: reference → manifest, config, layers
//!   tmp/<kind>-<pid>-<random>          staging; renamed into place when complete
//! ```
//!
//! Nothing is ever modified in place: each file or layer directory is written whole
//! under `tmp/` (same file system) and renamed into place, so a crash or a concurrent
//! reader (another task, or the `skiff image` CLI beside a running agent) sees either
//! nothing or the complete thing. The layer directory is keyed by the diff id (the
//! sha256 of the *uncompressed* tar), so the same layer pulled gzip-compressed from a
//! registry and imported uncompressed from a `docker save` archive is unpacked once.
//!
//! A reference's file name escapes every byte outside `[a-z0-9._-]` as `%XX`:
//! `docker.io/library/busybox:latest` → `docker.io%2Flibrary%2Fbusybox%3Alatest.json`
//! (a name longer than 200 bytes becomes `~<sha256 of the reference>.json`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ImageConfig;

/// The paths of a store rooted at one directory.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn lock_file(&self) -> PathBuf {
        self.root.join("lock")
    }

    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    /// The blob named `sha256:<hex>`; the digest must have been validated.
    pub(crate) fn blob(&self, digest: &str) -> PathBuf {
        self.blobs_dir().join(hex_of(digest))
    }

    pub(crate) fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// The directory holding one unpacked layer (its `fs/` and `layer.json`).
    pub(crate) fn layer_dir(&self, diff_id: &str) -> PathBuf {
        self.layers_dir().join(hex_of(diff_id))
    }

    /// The overlay lower dir of one layer.
    pub(crate) fn layer_fs(&self, diff_id: &str) -> PathBuf {
        self.layer_dir(diff_id).join(LAYER_FS)
    }

    pub(crate) fn refs_dir(&self) -> PathBuf {
        self.root.join("refs")
    }

    /// The record of one normalized reference.
    pub(crate) fn ref_file(&self, reference: &str) -> PathBuf {
        self.refs_dir()
            .join(format!("{}.json", escape_reference(reference)))
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// A fresh, unused path under `tmp/` for staging something of `kind`.
    pub(crate) fn tmp_path(&self, kind: &str) -> PathBuf {
        self.tmp_dir().join(format!(
            "{kind}-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ))
    }

    /// Every directory the store needs, created by `ImageStore::open`.
    pub(crate) fn dirs(&self) -> [PathBuf; 4] {
        [
            self.blobs_dir(),
            self.layers_dir(),
            self.refs_dir(),
            self.tmp_dir(),
        ]
    }
}

/// Name of the unpacked tree inside a layer directory.
pub(crate) const LAYER_FS: &str = "fs";
/// Name of the [`LayerRecord`] inside a layer directory.
pub(crate) const LAYER_RECORD: &str = "layer.json";

/// `refs/<escaped>.json`: what one reference points at.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct RefRecord {
    /// The normalized reference (the file name is derived from it).
    pub reference: String,
    /// The platform manifest's digest when the image came from a registry or an OCI
    /// layout; `None` for a docker-archive, which has no manifest blob.
    #[serde(default)]
    pub manifest_digest: Option<String>,
    /// `sha256:<hex>` of the config blob: the image id.
    pub config_digest: String,
    /// Diff ids of the layers, lowest first.
    pub layers: Vec<String>,
    /// Sum of the layers' uncompressed sizes in bytes.
    pub size: u64,
    /// The runtime-relevant part of the config blob, so a lookup reads one file.
    pub config: ImageConfig,
}

/// `layers/<hex>/layer.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LayerRecord {
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    /// Bytes in the uncompressed tar.
    pub size: u64,
}

/// The hex part of a validated `sha256:<hex>` digest.
pub(crate) fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// Escapes a reference into a file name (see the module doc). A name that would pass
/// 200 bytes is `~<sha256 of the reference>` instead; lookups go by file name, listings
/// read the reference inside the record.
pub(crate) fn escape_reference(reference: &str) -> String {
    let mut out = String::with_capacity(reference.len() + 16);
    for b in reference.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > 200 {
        use sha2::Digest as _;
        return format!(
            "~{}",
            hex::encode(sha2::Sha256::digest(reference.as_bytes()))
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_file_names_round_trip() {
        for r in [
            "docker.io/library/busybox:latest",
            "127.0.0.1:5000/x:1",
            "[::1]:5000/a@sha256:00",
        ] {
            let escaped = escape_reference(r);
            assert!(!escaped.contains('/'), "{escaped}");
        }
        let long = format!("quay.io/{}:1", "a/".repeat(100) + "b");
        assert!(escape_reference(&long).starts_with('~'));
        assert_eq!(
            escape_reference("docker.io/library/busybox:latest"),
            "docker.io%2Flibrary%2Fbusybox%3Alatest"
        );
    }
}
