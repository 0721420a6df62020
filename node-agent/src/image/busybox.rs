//! Building a small image offline from a static busybox binary (Debian's
//! `busybox-static` installs one at `/bin/busybox`).
//!
//! ```text
//! /bin/busybox              the binary, 0755
//! /bin/<applet> → busybox   one symlink per applet of `busybox --list`
//! /usr/bin/env → /bin/busybox   for `#!/usr/bin/env` scripts
//! /etc/passwd, /etc/group   root (0) and nobody (65534)
//! /tmp (1777), /var/www, /root (0700), /home, /proc, /sys, /dev
//! config: Cmd ["sh"], Env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
//! ```
//!
//! The image is written as an OCI layout under the store's `tmp/` and imported, so it
//! goes through the same verification as any import. The tar is deterministic (fixed
//! owner and times: the binary's mtime), so one busybox binary always gives one image id.

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use super::content::digest_of;
use super::error::{ImageError, IoContext};
use super::oci::{
    host_architecture, ConfigFile, Descriptor, Index, Manifest, RootFs, RuntimeConfig,
    ANNOTATION_REF_NAME, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST,
};
use super::reference::normalize;
use super::store::{remove_tree, ImageStore};
use super::LocalImage;

/// `PATH` of the image's config.
const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Builds the busybox image from the binary at `busybox` and stores it as `reference`.
///
/// # Errors
/// [`ImageError::InvalidReference`]; [`ImageError::Invalid`] if `busybox` is not a
/// working busybox (`--list` fails); [`ImageError::Io`].
pub fn build_busybox(
    store: &ImageStore,
    reference: &str,
    busybox: &Path,
) -> Result<LocalImage, ImageError> {
    let reference = normalize(reference)?;
    let binary = fs::read(busybox).ctx(|| format!("cannot read {}", busybox.display()))?;
    let mtime = fs::metadata(busybox)
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let applets = applets(busybox)?;
    let layer =
        layer_tar(&binary, &applets, mtime).ctx(|| "cannot build the busybox layer".to_string())?;
    let diff_id = digest_of(&layer);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&layer)
        .ctx(|| "cannot compress the busybox layer".to_string())?;
    let layer_gz = gz
        .finish()
        .ctx(|| "cannot compress the busybox layer".to_string())?;

    let config = ConfigFile {
        architecture: host_architecture().to_string(),
        os: "linux".to_string(),
        config: Some(RuntimeConfig {
            cmd: Some(vec!["sh".to_string()]),
            env: Some(vec![PATH.to_string()]),
            ..RuntimeConfig::default()
        }),
        rootfs: RootFs {
            kind: "layers".to_string(),
            diff_ids: vec![diff_id],
        },
    };
    let config_json = serde_json::to_vec(&config).expect("a config serializes");
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_string()),
        config: descriptor(OCI_CONFIG, &config_json),
        layers: vec![descriptor(OCI_LAYER_GZIP, &layer_gz)],
    };
    let manifest_json = serde_json::to_vec(&manifest).expect("a manifest serializes");
    let mut entry = descriptor(OCI_MANIFEST, &manifest_json);
    entry.annotations = Some([(ANNOTATION_REF_NAME.to_string(), reference.clone())].into());
    let index = Index {
        schema_version: 2,
        media_type: Some(OCI_INDEX.to_string()),
        manifests: vec![entry],
    };
    let index_json = serde_json::to_vec(&index).expect("an index serializes");

    let _lock = store.writer_lock()?;
    let dir = store.layout().tmp_path("busybox");
    let result = (|| {
        let blobs = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).ctx(|| format!("cannot create {}", blobs.display()))?;
        for bytes in [&config_json, &manifest_json, &layer_gz] {
            let path = blobs.join(super::schema::hex_of(&digest_of(bytes)));
            fs::write(&path, bytes).ctx(|| format!("cannot write {}", path.display()))?;
        }
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .ctx(|| format!("cannot write {}", dir.display()))?;
        fs::write(dir.join("index.json"), &index_json)
            .ctx(|| format!("cannot write {}", dir.display()))?;
        super::import::import_dir(store, &dir, "busybox", true)
    })();
    remove_tree(&dir);
    result?;
    store.get(&reference).ok_or_else(|| ImageError::NotPresent {
        reference: reference.clone(),
    })
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: digest_of(bytes),
        size: bytes.len() as i64,
        ..Descriptor::default()
    }
}

/// The applet names of `busybox --list`.
fn applets(busybox: &Path) -> Result<Vec<String>, ImageError> {
    let output = Command::new(busybox)
        .arg("--list")
        .output()
        .ctx(|| format!("cannot run {} --list", busybox.display()))?;
    if !output.status.success() {
        return Err(ImageError::invalid(
            busybox.display().to_string(),
            format!(
                "`--list` failed ({}): is it busybox? {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ));
    }
    let applets: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/') && *a != "." && *a != "..")
        .map(str::to_string)
        .collect();
    if applets.is_empty() {
        return Err(ImageError::invalid(
            busybox.display().to_string(),
            "`--list` printed no applets: is it busybox?",
        ));
    }
    Ok(applets)
}

/// The layer's uncompressed tar.
fn layer_tar(binary: &[u8], applets: &[String], mtime: u64) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        h
    };
    for (dir, mode) in [
        ("bin/", 0o755),
        ("dev/", 0o755),
        ("etc/", 0o755),
        ("home/", 0o755),
        ("proc/", 0o555),
        ("root/", 0o700),
        ("sys/", 0o555),
        ("tmp/", 0o1777),
        ("usr/", 0o755),
        ("usr/bin/", 0o755),
        ("var/", 0o755),
        ("var/www/", 0o755),
    ] {
        tar.append_data(
            &mut header(tar::EntryType::Directory, mode, 0),
            dir,
            std::io::empty(),
        )?;
    }
    tar.append_data(
        &mut header(tar::EntryType::Regular, 0o755, binary.len() as u64),
        "bin/busybox",
        binary,
    )?;
    for applet in applets {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        tar.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
    }
    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
    tar.append_link(&mut h, "usr/bin/env", "/bin/busybox")?;
    let files: [(&str, &[u8]); 2] = [
        (
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        ("etc/group", b"root:x:0:\nnobody:x:65534:\n"),
    ];
    for (path, data) in files {
        tar.append_data(
            &mut header(tar::EntryType::Regular, 0o644, data.len() as u64),
            path,
            data,
        )?;
    }
    tar.into_inner()
}
