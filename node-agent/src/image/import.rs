//! Importing images from files: an OCI image layout directory, an OCI archive (a tar
//! of a layout, `skopeo copy … oci-archive:`), or a docker-archive (`docker save`,
//! `skopeo copy … docker-archive:`), tars optionally gzip-compressed.
//!
//! An archive is first unpacked (with the layer unpacker's path checks) into the
//! store's `tmp/`, then read as a directory. Everything read is verified: blobs of an
//! OCI layout against their digests, every layer's uncompressed stream against the
//! config's diff ids.
//!
//! Names: an OCI layout names its images with the annotations of `index.json`:
//! `io.containerd.image.name` (a full reference, written by `docker save` ≥ 25 and
//! containerd) or else `org.opencontainers.image.ref.name`. When the latter is a bare
//! tag (`skopeo copy … oci:DIR:latest`), the image is named
//! `localhost/<file or directory name>:<tag>`, like Podman does. A docker-archive names
//! its images with `RepoTags`. Unnamed images are skipped with a warning; an archive
//! with no named image at all is an error.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use super::content::{digest_of, read_limited, MAX_DOCUMENT};
use super::error::{ImageError, IoContext};
use super::oci::{
    platforms, select_platform, ConfigFile, Descriptor, DockerArchiveEntry, Document,
    ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME,
};
use super::reference::{normalize, validate_digest};
use super::store::{remove_tree, ImageStore};
use super::unpack::{clean_path, unpack_layer};

/// Imports every named image found at `path`; returns their normalized references.
pub(crate) fn import(store: &ImageStore, path: &Path) -> Result<Vec<String>, ImageError> {
    let meta = fs::metadata(path).ctx(|| format!("cannot read {}", path.display()))?;
    let stem = base_name(path);
    let _lock = store.writer_lock()?;
    if meta.is_dir() {
        return import_dir(store, path, &stem, false);
    }
    let staging = store.layout().tmp_path("archive");
    let result = (|| {
        fs::create_dir(&staging).ctx(|| format!("cannot create {}", staging.display()))?;
        let file = File::open(path).ctx(|| format!("cannot open {}", path.display()))?;
        unpack_layer(&path.display().to_string(), file, &staging)?;
        import_dir(store, &staging, &stem, true)
    })();
    remove_tree(&staging);
    result.map_err(|e| match e {
        ImageError::Invalid { what, reason } if what == staging.display().to_string() => {
            ImageError::Invalid {
                what: path.display().to_string(),
                reason,
            }
        }
        e => e,
    })
}

/// Imports from a directory holding a layout or an unpacked archive. The caller holds
/// the writer lock.
pub(crate) fn import_dir(
    store: &ImageStore,
    dir: &Path,
    stem: &str,
    confined: bool,
) -> Result<Vec<String>, ImageError> {
    let src = Source::new(dir, confined)?;
    if dir.join("index.json").exists() {
        import_oci(store, &src, stem)
    } else if dir.join("manifest.json").exists() {
        import_docker(store, &src)
    } else {
        Err(ImageError::invalid(
            dir.display().to_string(),
            "neither an OCI image layout (no index.json) nor a docker-archive (no manifest.json)",
        ))
    }
}

/// The directory being imported. Every file is opened through [`Source::file`], which
/// insists on a regular file (a symlink to `/dev/zero` would never end) and, for an
/// unpacked archive (`confined`), on one inside the directory even after symlinks.
struct Source<'a> {
    dir: &'a Path,
    canonical: PathBuf,
    confined: bool,
}

impl<'a> Source<'a> {
    fn new(dir: &'a Path, confined: bool) -> Result<Source<'a>, ImageError> {
        let canonical = dir
            .canonicalize()
            .ctx(|| format!("cannot resolve {}", dir.display()))?;
        Ok(Source {
            dir,
            canonical,
            confined,
        })
    }

    fn name(&self) -> String {
        self.dir.display().to_string()
    }

    /// The regular file `name` (relative, no `..`) of the directory.
    fn file(&self, name: &str) -> Result<PathBuf, ImageError> {
        let unsafe_path = |reason: &str| ImageError::UnsafePath {
            what: self.name(),
            entry: name.to_string(),
            reason: reason.to_string(),
        };
        let rel = clean_path(Path::new(name)).map_err(unsafe_path)?;
        let resolved = self
            .dir
            .join(&rel)
            .canonicalize()
            .map_err(|_| ImageError::invalid(self.name(), format!("{name:?} is missing")))?;
        if self.confined && !resolved.starts_with(&self.canonical) {
            return Err(unsafe_path("resolves outside the archive"));
        }
        if !resolved.is_file() {
            return Err(ImageError::invalid(
                self.name(),
                format!("{name:?} is not a regular file"),
            ));
        }
        Ok(resolved)
    }

    /// `blobs/sha256/<hex>`, after validating the digest.
    fn blob(&self, digest: &str) -> Result<PathBuf, ImageError> {
        validate_digest(digest).map_err(|r| ImageError::invalid(self.name(), r))?;
        self.file(&format!("blobs/sha256/{}", super::schema::hex_of(digest)))
            .map_err(|e| match e {
                ImageError::Invalid { what, reason } => ImageError::Invalid {
                    what,
                    reason: format!("blob {digest}: {reason}"),
                },
                e => e,
            })
    }

    /// A small blob, verified against its digest.
    fn small_blob(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.blob(digest)?;
        let bytes = read_limited(&path, MAX_DOCUMENT)?;
        super::content::verify(&format!("blob {}", path.display()), digest, &bytes)?;
        Ok(bytes)
    }
}

fn import_oci(store: &ImageStore, src: &Source, stem: &str) -> Result<Vec<String>, ImageError> {
    let dir = src.dir;
    let index_path = src.file("index.json")?;
    let what = dir.join("index.json").display().to_string();
    let bytes = read_limited(&index_path, MAX_DOCUMENT)?;
    let Document::Index(index) = Document::parse(&what, super::oci::OCI_INDEX, &bytes)? else {
        return Err(ImageError::invalid(
            &what,
            "index.json is not an image index",
        ));
    };
    let mut imported = Vec::new();
    let mut unnamed = 0;
    for entry in &index.manifests {
        let names = oci_names(entry, stem)?;
        if names.is_empty() {
            unnamed += 1;
            tracing::warn!(layout = %dir.display(), digest = %entry.digest, "skipping an unnamed image");
            continue;
        }
        let (manifest_digest, manifest_bytes) = resolve_manifest(src, entry)?;
        let manifest_what = format!("manifest {manifest_digest} in {}", dir.display());
        let Document::Manifest(manifest) = Document::parse(&manifest_what, "", &manifest_bytes)?
        else {
            return Err(ImageError::invalid(manifest_what, "not an image manifest"));
        };
        let config_digest = manifest.config.digest.clone();
        let config_bytes = src.small_blob(&config_digest)?;
        let config = ConfigFile::parse(&format!("config {config_digest}"), &config_bytes)?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::invalid(
                manifest_what,
                format!(
                    "{} layers but the config lists {} diff ids",
                    manifest.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            ));
        }
        for (layer, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            if store.layer_size(diff_id).is_some() {
                continue;
            }
            let path = src.blob(&layer.digest)?;
            let file = File::open(&path).ctx(|| format!("cannot open layer {}", path.display()))?;
            store.install_layer(
                &format!("layer {} in {}", layer.digest, dir.display()),
                diff_id,
                Some(&layer.digest),
                file,
            )?;
        }
        store.commit(
            &names,
            Some((&manifest_digest, &manifest_bytes)),
            &config_digest,
            &config_bytes,
            &config,
        )?;
        imported.extend(names);
    }
    if imported.is_empty() {
        return Err(ImageError::invalid(
            what,
            if unnamed > 0 {
                "no image in it has a name (org.opencontainers.image.ref.name annotation); \
                 name it when writing the layout, e.g. skopeo copy … oci:DIR:NAME"
            } else {
                "it lists no images"
            },
        ));
    }
    Ok(imported)
}

/// The names an index entry gives its image.
fn oci_names(entry: &Descriptor, stem: &str) -> Result<Vec<String>, ImageError> {
    let bad = |name: &str, e: ImageError| {
        ImageError::invalid(
            format!("index.json entry {}", entry.digest),
            format!("its name {name:?} is not a valid image reference: {e}"),
        )
    };
    if let Some(full) = entry.annotation(ANNOTATION_CONTAINERD_NAME) {
        return normalize(full).map(|n| vec![n]).map_err(|e| bad(full, e));
    }
    let Some(name) = entry.annotation(ANNOTATION_REF_NAME) else {
        return Ok(Vec::new());
    };
    let is_bare_tag = !name.contains(['/', ':', '@']);
    let full = if is_bare_tag {
        format!("localhost/{stem}:{name}")
    } else {
        name.to_string()
    };
    normalize(&full).map(|n| vec![n]).map_err(|e| bad(name, e))
}

/// The bytes of the manifest an index entry points at, descending into a nested index
/// (a multi-platform image) to this host's platform.
fn resolve_manifest(src: &Source, entry: &Descriptor) -> Result<(String, Vec<u8>), ImageError> {
    let bytes = src.small_blob(&entry.digest)?;
    let what = format!("blob {} in {}", entry.digest, src.name());
    match Document::parse(&what, &entry.media_type, &bytes)? {
        Document::Manifest(_) => Ok((entry.digest.clone(), bytes)),
        Document::Index(nested) => {
            let Some(chosen) = select_platform(&nested) else {
                return Err(ImageError::Unsupported {
                    what,
                    reason: format!(
                        "no linux/{} image in the index (offers: {})",
                        super::oci::host_architecture(),
                        platforms(&nested)
                    ),
                });
            };
            let bytes = src.small_blob(&chosen.digest)?;
            Ok((chosen.digest.clone(), bytes))
        }
    }
}

fn import_docker(store: &ImageStore, src: &Source) -> Result<Vec<String>, ImageError> {
    let dir = src.dir;
    let manifest_path = src.file("manifest.json")?;
    let what = dir.join("manifest.json").display().to_string();
    let bytes = read_limited(&manifest_path, MAX_DOCUMENT)?;
    let entries: Vec<DockerArchiveEntry> = serde_json::from_slice(&bytes)
        .map_err(|e| ImageError::invalid(&what, format!("not a docker-archive manifest: {e}")))?;
    let mut imported = Vec::new();
    for entry in entries {
        let tags = entry.repo_tags.clone().unwrap_or_default();
        if tags.is_empty() {
            tracing::warn!(archive = %dir.display(), config = %entry.config, "skipping an untagged image");
            continue;
        }
        let names = tags
            .iter()
            .map(|t| normalize(t))
            .collect::<Result<Vec<_>, _>>()?;
        let config_path = src.file(&entry.config)?;
        let config_bytes = read_limited(&config_path, MAX_DOCUMENT)?;
        let config_digest = digest_of(&config_bytes);
        // The config is named by its digest: `<hex>.json` or `blobs/sha256/<hex>`.
        if let Some(named) = digest_in_name(&entry.config) {
            super::content::check(&format!("config {}", entry.config), &named, &config_digest)?;
        }
        let config = ConfigFile::parse(&format!("config {}", entry.config), &config_bytes)?;
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(ImageError::invalid(
                &what,
                format!(
                    "{} layers but the config lists {} diff ids",
                    entry.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            ));
        }
        for (layer, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
            if store.layer_size(diff_id).is_some() {
                continue;
            }
            let path = src.file(layer)?;
            let file = File::open(&path).ctx(|| format!("cannot open layer {}", path.display()))?;
            // Only `blobs/sha256/<hex>` names are digests; `<v1 id>/layer.tar` is not.
            let digest = layer
                .strip_prefix("blobs/sha256/")
                .and_then(|_| digest_in_name(layer));
            store.install_layer(
                &format!("layer {layer} of docker-archive {}", dir.display()),
                diff_id,
                digest.as_deref(),
                file,
            )?;
        }
        store.commit(&names, None, &config_digest, &config_bytes, &config)?;
        imported.extend(names);
    }
    if imported.is_empty() {
        return Err(ImageError::invalid(
            what,
            "no image in it has a name (RepoTags); name it when saving, e.g. \
             skopeo copy … docker-archive:FILE:NAME:TAG",
        ));
    }
    Ok(imported)
}

/// The digest a docker-archive file name carries: `<hex>.json`, `blobs/sha256/<hex>`.
fn digest_in_name(name: &str) -> Option<String> {
    let file = Path::new(name).file_name()?.to_str()?;
    let hex = file.strip_suffix(".json").unwrap_or(file);
    let digest = format!("sha256:{hex}");
    validate_digest(&digest).ok().map(|()| digest)
}

/// A repository-safe name from a path: `/tmp/My_Image.tar.gz` → `my_image`.
fn base_name(path: &Path) -> String {
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or("image")
        .to_ascii_lowercase();
    let mut stem = file.as_str();
    for ext in [".gz", ".tgz", ".zst", ".tar", ".oci"] {
        stem = stem.strip_suffix(ext).unwrap_or(stem);
    }
    let cleaned: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    if cleaned.is_empty() {
        "image".to_string()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_names_are_valid_repositories() {
        assert_eq!(base_name(Path::new("/tmp/My_Image.tar.gz")), "my-image");
        assert_eq!(base_name(Path::new("/tmp/bb")), "bb");
        assert_eq!(base_name(Path::new("/tmp/__.tar")), "image");
        for p in ["/x/A b.c.tar", "/tmp/My_Image.tar.gz", "/"] {
            normalize(&format!("localhost/{}:1", base_name(Path::new(p)))).unwrap();
        }
    }

    #[test]
    fn digests_in_archive_names() {
        let hex = "a".repeat(64);
        assert_eq!(
            digest_in_name(&format!("{hex}.json")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(
            digest_in_name(&format!("blobs/sha256/{hex}")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(digest_in_name("abc/layer.tar"), None);
    }
}
