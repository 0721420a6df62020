//! `skiff image …`: the store's command line, for operators and tests. Safe to run
//! beside a running agent (see the concurrency notes in `store.rs`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::{build_busybox, store_dir, ImageStore};

/// The `skiff image` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ImageCmd {
    /// Import images from an OCI image layout directory, an OCI archive
    /// (`skopeo copy … oci-archive:FILE:NAME`) or a docker-archive (`docker save`);
    /// tars may be gzip-compressed.
    Import {
        /// The directory or archive file.
        path: PathBuf,
    },
    /// Pull an image from its registry (anonymous; plain HTTP for localhost).
    Pull {
        /// The image reference, e.g. `busybox:1.36` or `127.0.0.1:5000/app:1`.
        reference: String,
        /// A registry (`host[:port]`) to reach over plain HTTP; repeatable.
        #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
        insecure_registry: Vec<String>,
    },
    /// List the images in the store.
    #[command(alias = "ls")]
    List,
    /// Remove an image name (content no other name uses is deleted).
    #[command(alias = "remove")]
    Rm {
        /// The image reference.
        reference: String,
    },
    /// Build a small image offline from a static busybox binary.
    BuildBusybox {
        /// The name to give the image.
        #[arg(default_value = "skiff.local/busybox:latest")]
        reference: String,
        /// The busybox binary (Debian: `busybox-static`).
        #[arg(long, default_value = "/bin/busybox")]
        busybox: PathBuf,
    },
}

/// Runs one `skiff image` command against the store of the agent whose root directory
/// (`--root-dir`) is `root`, i.e. the store at `<root>/images`, printing human output.
///
/// # Errors
/// The store's error, with what was being done.
pub async fn run_cli(root: &Path, cmd: ImageCmd) -> anyhow::Result<()> {
    let dir = store_dir(root);
    let store = ImageStore::open(&dir)
        .with_context(|| format!("cannot open the image store at {}", dir.display()))?;
    match cmd {
        ImageCmd::Import { path } => {
            let store2 = store.clone();
            let path2 = path.clone();
            let refs = tokio::task::spawn_blocking(move || store2.import(&path2))
                .await?
                .with_context(|| format!("cannot import {}", path.display()))?;
            for r in refs {
                let id = store.get(&r).map(|i| short_id(&i.id)).unwrap_or_default();
                println!("imported {r} ({id})");
            }
        }
        ImageCmd::Pull {
            reference,
            insecure_registry,
        } => {
            let store = store.with_insecure_registries(insecure_registry);
            let image = store
                .pull(&reference)
                .await
                .with_context(|| format!("cannot pull {reference}"))?;
            println!(
                "pulled {} ({}, {})",
                image.reference,
                short_id(&image.id),
                human_size(image.size)
            );
        }
        ImageCmd::List => print!("{}", table(&store.list())),
        ImageCmd::Rm { reference } => {
            store
                .remove(&reference)
                .with_context(|| format!("cannot remove {reference}"))?;
            println!("removed {reference}");
        }
        ImageCmd::BuildBusybox { reference, busybox } => {
            let store2 = store.clone();
            let image = tokio::task::spawn_blocking(move || {
                build_busybox(&store2, &reference, &busybox)
                    .with_context(|| format!("cannot build {reference} from {}", busybox.display()))
            })
            .await??;
            println!(
                "built {} ({}, {})",
                image.reference,
                short_id(&image.id),
                human_size(image.size)
            );
        }
    }
    Ok(())
}

/// `REFERENCE  ID  SIZE` rows, columns padded to their widest cell.
fn table(images: &[super::LocalImage]) -> String {
    let rows: Vec<[String; 3]> = images
        .iter()
        .map(|i| [i.reference.clone(), short_id(&i.id), human_size(i.size)])
        .collect();
    let width = rows
        .iter()
        .map(|r| r[0].len())
        .max()
        .unwrap_or(0)
        .max("REFERENCE".len());
    let mut out = format!("{:<width$}  {:<12}  SIZE\n", "REFERENCE", "ID");
    for [reference, id, size] in rows {
        out.push_str(&format!("{reference:<width$}  {id:<12}  {size}\n"));
    }
    out
}

/// The first 12 hex digits of `sha256:<hex>`.
fn short_id(id: &str) -> String {
    id.strip_prefix("sha256:")
        .unwrap_or(id)
        .chars()
        .take(12)
        .collect()
}

/// Bytes in decimal units, like `docker images`: `2.1MB`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_the_table() {
        let image = super::super::LocalImage {
            reference: "docker.io/library/busybox:latest".into(),
            id: format!("sha256:{}", "ab".repeat(32)),
            config: Default::default(),
            layers: vec![],
            size: 2_134_000,
        };
        let t = table(&[image]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("REFERENCE"));
        assert!(lines[0].contains("ID") && lines[0].ends_with("SIZE"));
        assert!(lines[1].contains("abababababab  2.1MB"), "{t}");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_500), "1.5kB");
    }
}
