//! A container's root filesystem: an overlayfs of the image's layers under a private
//! writable upper directory.
//!
//! ```text
//! <dir>/upper/    the container's writes (overlay upperdir)
//! <dir>/work/     overlay's scratch space (workdir), same file system as upper
//! <dir>/rootfs/   the mount point: lowerdir = layer N : … : layer 1 (highest first)
//! ```
//!
//! Mount state is read from `/proc/self/mountinfo` so that mounting twice, or
//! unmounting what is not mounted, is a no-op: the agent may retry after a crash.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::error::{ImageError, IoContext};

/// The longest option string `mount(2)` accepts: one page, with its NUL.
const MAX_MOUNT_DATA: usize = 4095;

/// Mounts the overlay of `layers` (lowest first) at `dir/rootfs`, creating
/// `dir/{upper,work,rootfs}`; returns `dir/rootfs`. Already mounted → `Ok`.
pub(crate) fn mount_overlay(layers: &[PathBuf], dir: &Path) -> Result<PathBuf, ImageError> {
    let upper = dir.join("upper");
    let work = dir.join("work");
    let rootfs = dir.join("rootfs");
    for d in [&upper, &work, &rootfs] {
        fs::create_dir_all(d).ctx(|| format!("cannot create {}", d.display()))?;
    }
    let rootfs = rootfs
        .canonicalize()
        .ctx(|| format!("cannot resolve {}", rootfs.display()))?;
    if is_mountpoint(&rootfs)? {
        return Ok(rootfs);
    }
    let mut lower: Vec<PathBuf> = layers.iter().rev().cloned().collect();
    if lower.is_empty() {
        // overlayfs needs a lower dir; an image without layers gets an empty one.
        let empty = dir.join("empty");
        fs::create_dir_all(&empty).ctx(|| format!("cannot create {}", empty.display()))?;
        lower.push(empty);
    }
    let mut parts = Vec::with_capacity(lower.len());
    for p in lower.iter().chain([&upper, &work]) {
        let s = p.to_str().filter(|s| !s.contains([':', ',', '\\']));
        let Some(s) = s else {
            return Err(ImageError::Unsupported {
                what: p.display().to_string(),
                reason: "overlay paths must be UTF-8 without ':', ',' or '\\'".into(),
            });
        };
        parts.push(s.to_string());
    }
    let (workdir, upperdir) = (
        parts.pop().unwrap_or_default(),
        parts.pop().unwrap_or_default(),
    );
    let options = format!(
        "lowerdir={},upperdir={upperdir},workdir={workdir}",
        parts.join(":")
    );
    if options.len() > MAX_MOUNT_DATA {
        return Err(ImageError::Unsupported {
            what: format!("rootfs at {}", rootfs.display()),
            reason: format!(
                "{} layers make overlay options of {} bytes, more than mount(2) takes \
                 ({MAX_MOUNT_DATA}); use a shorter store path or an image with fewer layers",
                layers.len(),
                options.len()
            ),
        });
    }
    mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|source| ImageError::Mount {
        action: "cannot mount overlay on",
        dir: rootfs.clone(),
        source,
    })?;
    Ok(rootfs)
}

/// Unmounts `dir/rootfs` if mounted; leaves the directories for the caller to delete.
pub(crate) fn unmount_overlay(dir: &Path) -> Result<(), ImageError> {
    let rootfs = dir.join("rootfs");
    let rootfs = match rootfs.canonicalize() {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(ImageError::io(
                format!("cannot resolve {}", rootfs.display()),
                e,
            ))
        }
    };
    // Stacked mounts (a retry that raced) come off one at a time.
    while is_mountpoint(&rootfs)? {
        umount2(&rootfs, MntFlags::empty()).map_err(|source| ImageError::Mount {
            action: "cannot unmount",
            dir: rootfs.clone(),
            source,
        })?;
    }
    Ok(())
}

/// One line of `/proc/self/mountinfo`, the fields this module needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MountInfo {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// File system type (`overlay`, `ext4`, …).
    pub fs_type: String,
    /// Per-superblock options (`lowerdir=…,upperdir=…` for overlay).
    pub super_options: String,
}

/// Parses `/proc/self/mountinfo`.
pub(crate) fn mounts() -> Result<Vec<MountInfo>, ImageError> {
    let text =
        fs::read_to_string("/proc/self/mountinfo").ctx(|| "cannot read /proc/self/mountinfo")?;
    Ok(parse_mountinfo(&text))
}

fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            // id parent maj:min root mount-point options [optional…] - type source super
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            let fs_type = right.next()?;
            let _source = right.next()?;
            let super_options = right.next().unwrap_or("");
            Some(MountInfo {
                mount_point: PathBuf::from(unescape_octal(mount_point)),
                fs_type: unescape_octal(fs_type),
                super_options: unescape_octal(super_options),
            })
        })
        .collect()
}

/// Undoes mountinfo's `\ooo` escapes (space, tab, newline, backslash).
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(v as u8);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `path` (canonical) is a mount point in this mount namespace.
fn is_mountpoint(path: &Path) -> Result<bool, ImageError> {
    Ok(mounts()?.iter().any(|m| m.mount_point == path))
}

/// Every lower directory of every overlay mounted in this namespace: layers that a
/// garbage collection must not delete.
pub(crate) fn lower_dirs_in_use() -> Result<Vec<PathBuf>, ImageError> {
    Ok(mounts()?
        .into_iter()
        .filter(|m| m.fs_type == "overlay")
        .flat_map(|m| {
            m.super_options
                .split(',')
                .filter_map(|o| o.strip_prefix("lowerdir="))
                .flat_map(|l| l.split(':').map(PathBuf::from).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines() {
        let text = "36 25 0:32 / /var/lib/a\\040b rw,relatime shared:1 - overlay overlay rw,lowerdir=/l/2:/l/1,upperdir=/u,workdir=/w\n\
                    22 1 254:0 / / rw - ext4 /dev/vda rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_point, Path::new("/var/lib/a b"));
        assert_eq!(m[0].fs_type, "overlay");
        assert!(m[0].super_options.contains("lowerdir=/l/2:/l/1"));
        assert_eq!(m[1].mount_point, Path::new("/"));
    }
}
