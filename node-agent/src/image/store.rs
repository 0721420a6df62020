//! [`ImageStore`]: lookups, the pull-once rule, committing images, removal and garbage
//! collection, and the cross-process lock.
//!
//! # Concurrency
//! Readers need no lock: every file and layer directory appears by `rename` (see
//! `schema.rs`), so a reader sees an image whole or not at all. Writers that create
//! unreferenced content (import, pull, build) hold a *shared* `flock` on `<root>/lock`
//! from their first layer to their last ref record; garbage collection takes it
//! *exclusive* and non-blocking, so it never deletes a layer that an import in another
//! task or process has unpacked but not yet referenced, and never waits for a pull.
//! Within one process, concurrent pulls of one reference are coalesced into one (the
//! `inflight` map); across processes two pulls of one image both work and the second
//! rename finds the content already there.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use futures::future::{BoxFuture, FutureExt, Shared};
use nix::fcntl::{Flock, FlockArg};

use super::content::{check, put_blob, write_atomic, HashingReader};
use super::error::{ImageError, IoContext};
use super::oci::ConfigFile;
use super::reference::Reference;
use super::schema::{LayerRecord, Layout, RefRecord, LAYER_FS, LAYER_RECORD};
use super::unpack::unpack_layer;
use super::{rootfs, LocalImage, PullPolicy};

/// The local image store: content-addressed blobs, unpacked layers, named references.
/// Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

type PullFuture = Shared<BoxFuture<'static, Result<LocalImage, ImageError>>>;

struct Inner {
    layout: Layout,
    /// Registries (`host[:port]`) spoken to over plain HTTP besides loopback ones.
    insecure: Vec<String>,
    /// Pulls under way, by normalized reference. Entries are inserted under this lock
    /// and removed by the pull task itself, which takes this lock after it finishes.
    inflight: parking_lot::Mutex<HashMap<String, PullFuture>>,
    /// The HTTP client, built on first pull.
    client: OnceLock<reqwest::Client>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("root", &self.inner.layout.root())
            .finish_non_exhaustive()
    }
}

impl ImageStore {
    /// Opens (creating if needed) the store rooted at `root`. If no other task or
    /// process is writing to it, leftovers of an interrupted import (staging files,
    /// layers no image references) are removed.
    ///
    /// # Errors
    /// [`ImageError::Io`] if the directories cannot be created.
    pub fn open(root: &Path) -> Result<ImageStore, ImageError> {
        fs::create_dir_all(root).ctx(|| format!("cannot create {}", root.display()))?;
        // Canonical, because layer paths are compared with what mountinfo shows.
        let root = root
            .canonicalize()
            .ctx(|| format!("cannot resolve {}", root.display()))?;
        let layout = Layout::new(&root);
        for dir in layout.dirs() {
            fs::create_dir_all(&dir).ctx(|| format!("cannot create {}", dir.display()))?;
        }
        let store = ImageStore {
            inner: Arc::new(Inner {
                layout,
                insecure: Vec::new(),
                inflight: parking_lot::Mutex::new(HashMap::new()),
                client: OnceLock::new(),
            }),
        };
        if let Err(e) = store.collect_garbage() {
            tracing::warn!(error = %e, "image store: garbage collection at open failed");
        }
        Ok(store)
    }

    /// Also speak plain HTTP (no TLS) to these registries (`host` or `host:port`), like
    /// Docker's `--insecure-registry`. Registries on `localhost` and loopback addresses
    /// always get plain HTTP. Call before sharing the store.
    pub fn with_insecure_registries(mut self, registries: Vec<String>) -> ImageStore {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.insecure = registries,
            None => {
                let inner = Inner {
                    layout: self.inner.layout.clone(),
                    insecure: registries,
                    inflight: parking_lot::Mutex::new(HashMap::new()),
                    client: OnceLock::new(),
                };
                self.inner = Arc::new(inner);
            }
        }
        self
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        self.inner.layout.root()
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    /// Whether `registry` is spoken to over plain HTTP.
    pub(crate) fn is_insecure(&self, registry: &str) -> bool {
        let host = match registry.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => h,
            _ => registry,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
            || self
                .inner
                .insecure
                .iter()
                .any(|i| i == registry || i == host)
    }

    /// The shared HTTP client.
    pub(crate) fn client(&self) -> Result<reqwest::Client, ImageError> {
        if let Some(c) = self.inner.client.get() {
            return Ok(c.clone());
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("skiff-node-agent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(15))
            .read_timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| ImageError::Registry {
                reference: String::new(),
                message: format!("cannot set up the HTTP client: {e}"),
            })?;
        Ok(self.inner.client.get_or_init(|| client).clone())
    }

    /// Makes `reference` available locally according to `policy`: `Never` only looks,
    /// `IfNotPresent` pulls when absent, `Always` asks the registry (cheap when the
    /// manifest is unchanged: nothing is downloaded again; like the kubelet, a registry
    /// failure fails the call even when a local copy exists). Concurrent calls for one
    /// reference share a single pull.
    ///
    /// # Errors
    /// [`ImageError::InvalidReference`], [`ImageError::NeverPull`], or any pull error.
    pub async fn ensure(
        &self,
        reference: &str,
        policy: PullPolicy,
    ) -> Result<LocalImage, ImageError> {
        let key = Reference::parse(reference)?.to_string();
        match policy {
            PullPolicy::Never => self
                .get(&key)
                .ok_or(ImageError::NeverPull { reference: key }),
            PullPolicy::IfNotPresent => match self.get(&key) {
                Some(image) => Ok(image),
                None => self.pull(&key).await,
            },
            PullPolicy::Always => self.pull(&key).await,
        }
    }

    /// Pulls `reference` from its registry (see [`super::registry`]); a pull of the
    /// same reference already under way in this process is joined, not repeated. The
    /// pull runs in its own task: dropping the returned future does not abort it.
    ///
    /// # Errors
    /// [`ImageError::InvalidReference`], [`ImageError::NotFound`],
    /// [`ImageError::Registry`], [`ImageError::Transport`],
    /// [`ImageError::DigestMismatch`], [`ImageError::Unsupported`], …
    pub async fn pull(&self, reference: &str) -> Result<LocalImage, ImageError> {
        let parsed = Reference::parse(reference)?;
        let key = parsed.to_string();
        let pull = {
            let mut inflight = self.inner.inflight.lock();
            match inflight.get(&key) {
                Some(pull) => pull.clone(),
                None => {
                    let store = self.clone();
                    let task_key = key.clone();
                    // The task removes its entry only after this lock is released, so
                    // the entry is always inserted before it is removed.
                    let task = tokio::spawn(async move {
                        let result = super::registry::pull(&store, &parsed).await;
                        store.inner.inflight.lock().remove(&task_key);
                        result
                    });
                    let reference = key.clone();
                    let pull = async move {
                        task.await.unwrap_or_else(|e| {
                            Err(ImageError::Registry {
                                reference,
                                message: format!("the pull task failed: {e}"),
                            })
                        })
                    }
                    .boxed()
                    .shared();
                    inflight.insert(key, pull.clone());
                    pull
                }
            }
        };
        pull.await
    }

    /// The local image for `reference`, if present with all its layers. A digest
    /// reference (`name@sha256:…`) also finds an image pulled by tag whose manifest has
    /// that digest (the returned `reference` is then the tag it was stored under).
    pub fn get(&self, reference: &str) -> Option<LocalImage> {
        let parsed = Reference::parse(reference).ok()?;
        let key = parsed.to_string();
        if let Some(record) = self.read_ref(&self.inner.layout.ref_file(&key)) {
            return self.to_image(record);
        }
        let digest = parsed.digest.as_deref()?;
        let name = parsed.name();
        self.records()
            .into_iter()
            .filter(|r| r.manifest_digest.as_deref() == Some(digest))
            .find(|r| {
                Reference::parse(&r.reference)
                    .map(|p| p.name() == name)
                    .unwrap_or(false)
            })
            .and_then(|r| self.to_image(r))
    }

    /// Every complete image in the store, sorted by reference.
    pub fn list(&self) -> Vec<LocalImage> {
        let mut images: Vec<LocalImage> = self
            .records()
            .into_iter()
            .filter_map(|r| self.to_image(r))
            .collect();
        images.sort_by(|a, b| a.reference.cmp(&b.reference));
        images
    }

    /// Removes the name `reference`; content no longer referenced by any name is
    /// deleted unless an import is under way or it is mounted (it goes at a later
    /// removal or open).
    ///
    /// # Errors
    /// [`ImageError::InvalidReference`], [`ImageError::NotPresent`] if no such name,
    /// [`ImageError::Io`].
    pub fn remove(&self, reference: &str) -> Result<(), ImageError> {
        let key = Reference::parse(reference)?.to_string();
        let file = self.inner.layout.ref_file(&key);
        match fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A digest reference may name an image recorded by tag.
                let Some(image) = self.get(&key) else {
                    return Err(ImageError::NotPresent { reference: key });
                };
                let file = self.inner.layout.ref_file(&image.reference);
                fs::remove_file(&file).ctx(|| format!("cannot remove {}", file.display()))?;
            }
            Err(e) => {
                return Err(ImageError::io(
                    format!("cannot remove {}", file.display()),
                    e,
                ))
            }
        }
        if let Err(e) = self.collect_garbage() {
            tracing::warn!(error = %e, "image store: garbage collection failed");
        }
        Ok(())
    }

    /// Mounts `image`'s root filesystem at `dir/rootfs` (see [`super::rootfs`]).
    ///
    /// # Errors
    /// [`ImageError::Mount`], [`ImageError::Unsupported`] (too many layers for one
    /// mount), [`ImageError::Io`].
    pub fn mount_rootfs(&self, image: &LocalImage, dir: &Path) -> Result<PathBuf, ImageError> {
        for layer in &image.layers {
            if !layer.is_dir() {
                return Err(ImageError::NotPresent {
                    reference: format!("{} (layer {} is gone)", image.reference, layer.display()),
                });
            }
        }
        rootfs::mount_overlay(&image.layers, dir)
    }

    /// Unmounts `dir/rootfs` if mounted. Does not delete `dir`.
    ///
    /// # Errors
    /// [`ImageError::Mount`] (e.g. busy), [`ImageError::Io`].
    pub fn unmount_rootfs(dir: &Path) -> Result<(), ImageError> {
        rootfs::unmount_overlay(dir)
    }

    fn read_ref(&self, path: &Path) -> Option<RefRecord> {
        let bytes = fs::read(path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "image store: unreadable ref record");
                None
            }
        }
    }

    fn records(&self) -> Vec<RefRecord> {
        let dir = self.inner.layout.refs_dir();
        let Ok(entries) = fs::read_dir(&dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| self.read_ref(&e.path()))
            .collect()
    }

    fn to_image(&self, record: RefRecord) -> Option<LocalImage> {
        let layers: Vec<PathBuf> = record
            .layers
            .iter()
            .map(|d| self.inner.layout.layer_fs(d))
            .collect();
        if !layers.iter().all(|l| l.is_dir()) {
            return None;
        }
        Some(LocalImage {
            reference: record.reference,
            id: record.config_digest,
            config: record.config,
            layers,
            size: record.size,
        })
    }

    /// Takes the shared writer lock (blocking; only a garbage collection holds it
    /// exclusively, briefly).
    pub(crate) fn writer_lock(&self) -> Result<Flock<File>, ImageError> {
        let path = self.inner.layout.lock_file();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx(|| format!("cannot open {}", path.display()))?;
        Flock::lock(file, FlockArg::LockShared)
            .map_err(|(_, e)| ImageError::io(format!("cannot lock {}", path.display()), e.into()))
    }

    /// [`Self::writer_lock`] from async code.
    pub(crate) async fn writer_lock_async(&self) -> Result<Flock<File>, ImageError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.writer_lock())
            .await
            .map_err(|e| ImageError::io("lock task failed", io::Error::other(e.to_string())))?
    }

    /// Unpacks one layer from `reader` unless a layer with `diff_id` is already
    /// present. `digest`, when given, is checked against the raw (possibly compressed)
    /// stream, `diff_id` against the uncompressed tar. Returns the uncompressed size.
    /// Caller holds the writer lock.
    ///
    /// # Errors
    /// [`ImageError::DigestMismatch`], unpack errors; nothing is left behind.
    pub(crate) fn install_layer(
        &self,
        what: &str,
        diff_id: &str,
        digest: Option<&str>,
        reader: impl io::Read,
    ) -> Result<u64, ImageError> {
        let layout = &self.inner.layout;
        if let Some(size) = self.layer_size(diff_id) {
            return Ok(size);
        }
        let staging = layout.tmp_path("layer");
        let result = (|| {
            fs::create_dir(&staging).ctx(|| format!("cannot create {}", staging.display()))?;
            let fs_dir = staging.join(LAYER_FS);
            fs::create_dir(&fs_dir).ctx(|| format!("cannot create {}", fs_dir.display()))?;
            let mut raw = HashingReader::new(reader);
            let unpacked = unpack_layer(what, &mut raw, &fs_dir)?;
            let (raw_digest, _) = raw
                .finish()
                .map_err(|e| ImageError::invalid(what, format!("broken layer stream: {e}")))?;
            if let Some(digest) = digest {
                check(what, digest, &raw_digest)?;
            }
            check(
                &format!("{what} (uncompressed)"),
                diff_id,
                &unpacked.diff_id,
            )?;
            let record = LayerRecord {
                diff_id: diff_id.to_string(),
                size: unpacked.size,
            };
            let json = serde_json::to_vec(&record).expect("a layer record serializes");
            fs::write(staging.join(LAYER_RECORD), json)
                .ctx(|| format!("cannot write {}", staging.display()))?;
            let dest = layout.layer_dir(diff_id);
            match fs::rename(&staging, &dest) {
                Ok(()) => Ok(unpacked.size),
                // Another task or process installed the same layer meanwhile.
                Err(_) if self.layer_size(diff_id).is_some() => {
                    remove_tree(&staging);
                    Ok(unpacked.size)
                }
                Err(e) => Err(ImageError::io(
                    format!("cannot move layer into {}", dest.display()),
                    e,
                )),
            }
        })();
        if result.is_err() {
            remove_tree(&staging);
        }
        result
    }

    /// The uncompressed size of an installed layer; `None` if not installed.
    pub(crate) fn layer_size(&self, diff_id: &str) -> Option<u64> {
        let dir = self.inner.layout.layer_dir(diff_id);
        let bytes = fs::read(dir.join(LAYER_RECORD)).ok()?;
        let record: LayerRecord = serde_json::from_slice(&bytes).ok()?;
        dir.join(LAYER_FS).is_dir().then_some(record.size)
    }

    /// Records an image whose layers are installed under every name in `names`:
    /// stores the config (and manifest) blobs, then one ref record per name. Caller
    /// holds the writer lock.
    ///
    /// # Errors
    /// [`ImageError::DigestMismatch`] if a blob does not match its digest,
    /// [`ImageError::Invalid`] if a layer is missing, [`ImageError::Io`].
    pub(crate) fn commit(
        &self,
        names: &[String],
        manifest: Option<(&str, &[u8])>,
        config_digest: &str,
        config_bytes: &[u8],
        config: &ConfigFile,
    ) -> Result<LocalImage, ImageError> {
        let layout = &self.inner.layout;
        put_blob(layout, "image config", config_digest, config_bytes)?;
        if let Some((digest, bytes)) = manifest {
            put_blob(layout, "manifest", digest, bytes)?;
        }
        let mut size = 0;
        for diff_id in &config.rootfs.diff_ids {
            size += self.layer_size(diff_id).ok_or_else(|| {
                ImageError::invalid(config_digest, format!("layer {diff_id} is not installed"))
            })?;
        }
        let mut first = None;
        for name in names {
            let record = RefRecord {
                reference: name.clone(),
                manifest_digest: manifest.map(|(d, _)| d.to_string()),
                config_digest: config_digest.to_string(),
                layers: config.rootfs.diff_ids.clone(),
                size,
                config: config.image_config(),
            };
            let json = serde_json::to_vec_pretty(&record).expect("a ref record serializes");
            write_atomic(layout, &layout.ref_file(name), &json)?;
            first.get_or_insert(record);
        }
        let record =
            first.ok_or_else(|| ImageError::invalid(config_digest, "image has no name"))?;
        self.to_image(record).ok_or_else(|| {
            ImageError::invalid(
                config_digest,
                "a layer vanished while the image was committed",
            )
        })
    }

    /// Deletes unreferenced blobs and layers and stale staging files, if no writer holds
    /// the lock; layers mounted somewhere stay.
    pub(crate) fn collect_garbage(&self) -> Result<(), ImageError> {
        let layout = &self.inner.layout;
        let path = layout.lock_file();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx(|| format!("cannot open {}", path.display()))?;
        let Ok(_lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
            return Ok(()); // a writer is busy; try again another time
        };
        if let Ok(entries) = fs::read_dir(layout.tmp_dir()) {
            for entry in entries.flatten() {
                remove_tree(&entry.path());
            }
        }
        let records = self.records();
        let blobs: HashSet<String> = records
            .iter()
            .flat_map(|r| [Some(r.config_digest.clone()), r.manifest_digest.clone()])
            .flatten()
            .map(|d| super::schema::hex_of(&d).to_string())
            .collect();
        let layers: HashSet<String> = records
            .iter()
            .flat_map(|r| r.layers.iter())
            .map(|d| super::schema::hex_of(d).to_string())
            .collect();
        let mounted: HashSet<PathBuf> = rootfs::lower_dirs_in_use()?.into_iter().collect();
        if let Ok(entries) = fs::read_dir(layout.blobs_dir()) {
            for entry in entries.flatten() {
                if !blobs.contains(entry.file_name().to_string_lossy().as_ref()) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        if let Ok(entries) = fs::read_dir(layout.layers_dir()) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if layers.contains(&name) || mounted.contains(&entry.path().join(LAYER_FS)) {
                    continue;
                }
                // Out of layers/ in one rename, then deleted at leisure: a crash
                // midway never leaves a half-deleted layer that looks installed.
                let trash = layout.tmp_path("gc");
                if fs::rename(entry.path(), &trash).is_ok() {
                    remove_tree(&trash);
                }
            }
        }
        Ok(())
    }
}

/// Removes a staging or trash tree, logging (not failing) on error.
pub(crate) fn remove_tree(path: &Path) {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    };
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "image store: cannot clean up");
    }
}
