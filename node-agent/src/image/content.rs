//! Content addressing: sha256 digests, verified blob writes, atomic small files.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::error::{ImageError, IoContext};
use super::schema::Layout;

/// `sha256:<hex>` of `bytes`.
pub(crate) fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Checks that `bytes` hash to `expected`.
///
/// # Errors
/// [`ImageError::DigestMismatch`] naming `what`.
pub(crate) fn verify(what: &str, expected: &str, bytes: &[u8]) -> Result<(), ImageError> {
    check(what, expected, &digest_of(bytes))
}

/// Compares a computed digest with the expected one.
pub(crate) fn check(what: &str, expected: &str, actual: &str) -> Result<(), ImageError> {
    if expected == actual {
        Ok(())
    } else {
        Err(ImageError::DigestMismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        })
    }
}

/// A reader that hashes and counts what passes through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Reads the rest of the stream (a tar reader stops at the end-of-archive blocks,
    /// the hash covers the whole stream), then returns `(sha256:<hex>, bytes)`.
    pub(crate) fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
        ))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Writes `bytes` to `dest` atomically: a temp file under the store's `tmp/`, fsynced,
/// renamed over `dest`.
pub(crate) fn write_atomic(layout: &Layout, dest: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let tmp = layout.tmp_path("file");
    let result = (|| {
        let mut f = File::create(&tmp).ctx(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .ctx(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, dest).ctx(|| format!("cannot rename into {}", dest.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Stores a blob whose bytes are in memory, after checking they hash to `digest`. A
/// blob already present is left alone (it was verified when written).
pub(crate) fn put_blob(
    layout: &Layout,
    what: &str,
    digest: &str,
    bytes: &[u8],
) -> Result<(), ImageError> {
    verify(what, digest, bytes)?;
    let dest = layout.blob(digest);
    if dest.exists() {
        return Ok(());
    }
    write_atomic(layout, &dest, bytes)
}

/// Reads a stored blob.
pub(crate) fn read_blob(layout: &Layout, digest: &str) -> Result<Vec<u8>, ImageError> {
    let path = layout.blob(digest);
    fs::read(&path).ctx(|| format!("cannot read blob {}", path.display()))
}

/// Reads at most `limit` bytes of a small file (a manifest, a config), refusing a
/// larger one rather than loading it.
pub(crate) fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, ImageError> {
    let f = File::open(path).ctx(|| format!("cannot open {}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .ctx(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > limit {
        return Err(ImageError::invalid(
            path.display().to_string(),
            format!("larger than {limit} bytes; not a manifest or config"),
        ));
    }
    Ok(bytes)
}

/// Largest manifest, index or config the store reads (the distribution spec suggests
/// registries accept at least 4 MiB manifests).
pub(crate) const MAX_DOCUMENT: u64 = 8 << 20;
