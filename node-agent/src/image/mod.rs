//! The local image store (placeholder until the real module lands).
#![allow(missing_docs, dead_code)]
use std::path::{Path, PathBuf};
#[derive(Clone, Copy, Debug)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}
impl PullPolicy {
    pub fn from_k8s(p: Option<&str>, _reference: &str) -> PullPolicy {
        match p {
            Some("Always") => PullPolicy::Always,
            Some("Never") => PullPolicy::Never,
            _ => PullPolicy::IfNotPresent,
        }
    }
}
#[derive(Clone, Debug, Default)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}
#[derive(Clone, Debug, Default)]
pub struct LocalImage {
    pub reference: String,
    pub id: String,
    pub config: ImageConfig,
    pub layers: Vec<PathBuf>,
    pub size: u64,
}
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{0}")]
    NotFound(String),
}
impl ImageError {
    pub fn reason(&self) -> &'static str {
        "ErrImagePull"
    }
}
#[derive(Clone, Debug)]
pub struct ImageStore {
    root: PathBuf,
}
impl ImageStore {
    pub fn open(root: &Path) -> Result<ImageStore, ImageError> {
        Ok(ImageStore { root: root.into() })
    }
    pub async fn ensure(
        &self,
        reference: &str,
        _policy: PullPolicy,
    ) -> Result<LocalImage, ImageError> {
        Err(ImageError::NotFound(reference.into()))
    }
    pub fn mount_rootfs(&self, _image: &LocalImage, dir: &Path) -> Result<PathBuf, ImageError> {
        Ok(dir.join("rootfs"))
    }
    pub fn unmount_rootfs(_dir: &Path) -> Result<(), ImageError> {
        Ok(())
    }
}
