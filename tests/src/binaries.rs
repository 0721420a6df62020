//! Where the server binaries and `etcdctl` are: the `skiff` binary built by cargo, and the
//! etcd 3.4 tools installed by the system (Debian `etcd-server`, `etcd-client`).

use std::env;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Result};

/// Environment variable naming the `skiff` binary; overrides the search in the target dir.
pub const SKIFF_BIN_ENV: &str = "SKIFF_BIN";
/// Environment variable naming the `etcd` binary; default: `etcd` on `PATH`.
pub const ETCD_BIN_ENV: &str = "ETCD_BIN";
/// Environment variable naming the `etcdctl` binary; default: `etcdctl` on `PATH`.
pub const ETCDCTL_BIN_ENV: &str = "ETCDCTL_BIN";

/// The workspace root: the parent of this crate's manifest dir (`tests/`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The cargo target dir of the workspace: `CARGO_TARGET_DIR` if set (a relative value is
/// taken relative to the workspace root, as cargo does when run from there), otherwise
/// `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    target_dir_from(
        env::var_os("CARGO_TARGET_DIR").as_deref(),
        &workspace_root(),
    )
}

fn target_dir_from(var: Option<&OsStr>, root: &Path) -> PathBuf {
    match var {
        Some(v) if !v.is_empty() => {
            let p = PathBuf::from(v);
            if p.is_absolute() {
                p
            } else {
                root.join(p)
            }
        }
        _ => root.join("target"),
    }
}

/// Locates the `skiff` binary built by cargo (`cargo build -p skiff-control-plane`).
///
/// `SKIFF_BIN` wins when set. Otherwise `<target>/release/skiff` and `<target>/debug/skiff`
/// (see [`target_dir`]) are candidates; the most recently built one is returned.
///
/// # Errors
/// When `SKIFF_BIN` names no file, or no candidate exists (the message says how to build).
pub fn skiff_binary() -> Result<PathBuf> {
    if let Some(v) = env::var_os(SKIFF_BIN_ENV).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(v);
        if !p.is_file() {
            bail!("{SKIFF_BIN_ENV}={} is not a file", p.display());
        }
        return Ok(p);
    }
    let target = target_dir();
    newest_existing(&[
        target.join("release").join("skiff"),
        target.join("debug").join("skiff"),
    ])
    .ok_or_else(|| {
        anyhow::anyhow!(
            "no skiff binary in {}/{{release,debug}}; build it with \
             `cargo build --release -p skiff-control-plane` or set {SKIFF_BIN_ENV}",
            target.display()
        )
    })
}

fn newest_existing(candidates: &[PathBuf]) -> Option<PathBuf> {
    candidates
        .iter()
        .filter_map(|p| {
            let modified = p
                .metadata()
                .ok()?
                .modified()
                .unwrap_or(SystemTime::UNIX_EPOCH);
            p.is_file().then(|| (modified, p.clone()))
        })
        .max_by_key(|(m, _)| *m)
        .map(|(_, p)| p)
}

/// The `etcd` server binary: `ETCD_BIN`, else `etcd` found on `PATH`, else `/usr/bin/etcd`.
pub fn etcd_binary() -> PathBuf {
    tool_binary(ETCD_BIN_ENV, "etcd")
}

/// The `etcdctl` binary: `ETCDCTL_BIN`, else `etcdctl` on `PATH`, else `/usr/bin/etcdctl`.
pub fn etcdctl_binary() -> PathBuf {
    tool_binary(ETCDCTL_BIN_ENV, "etcdctl")
}

fn tool_binary(var: &str, name: &str) -> PathBuf {
    if let Some(v) = env::var_os(var).filter(|v| !v.is_empty()) {
        return PathBuf::from(v);
    }
    find_on_path(name, env::var_os("PATH").as_deref())
        .unwrap_or_else(|| Path::new("/usr/bin").join(name))
}

fn find_on_path(name: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    env::split_paths(path?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_dir_defaults_to_workspace_target() {
        let root = Path::new("/ws");
        assert_eq!(target_dir_from(None, root), PathBuf::from("/ws/target"));
        assert_eq!(
            target_dir_from(Some(OsStr::new("")), root),
            PathBuf::from("/ws/target")
        );
    }

    #[test]
    fn target_dir_honours_absolute_and_relative_override() {
        let root = Path::new("/ws");
        assert_eq!(
            target_dir_from(Some(OsStr::new("/tmp/t")), root),
            PathBuf::from("/tmp/t")
        );
        assert_eq!(
            target_dir_from(Some(OsStr::new("tgt")), root),
            PathBuf::from("/ws/tgt")
        );
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(workspace_root().join("tests").join("Cargo.toml").is_file());
    }

    #[test]
    fn newest_existing_picks_latest_and_skips_missing() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old");
        let new = dir.path().join("new");
        std::fs::write(&old, b"").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&new, b"").unwrap();
        let missing = dir.path().join("missing");
        assert_eq!(
            newest_existing(&[missing.clone(), old.clone(), new.clone()]),
            Some(new)
        );
        assert_eq!(newest_existing(&[missing]), None);
    }

    #[test]
    fn find_on_path_searches_each_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tool"), b"").unwrap();
        let path = env::join_paths([Path::new("/nonexistent"), dir.path()]).unwrap();
        assert_eq!(
            find_on_path("tool", Some(&path)),
            Some(dir.path().join("tool"))
        );
        assert_eq!(find_on_path("absent", Some(&path)), None);
        assert_eq!(find_on_path("tool", None), None);
    }
}
