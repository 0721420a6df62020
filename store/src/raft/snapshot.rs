//! Snapshot files: the state machine (every state-machine column family) frozen at one
//! applied log id, as one file that raft streams to lagging members and that
//! Maintenance.Snapshot hands to `etcdctl snapshot save`.
//!
//! ```text
//! "SKIFFSNAP1"
//! u32 BE length ‖ bincode(SnapshotHeader)          applied log id, membership, revision
//! repeated: u8 cf ‖ u32 BE klen ‖ key ‖ u32 BE vlen ‖ value     cf = index in SM_CFS
//! 0xFF                                               end of records
//! u32 BE crc32 of every byte before it
//! [zero padding to 512 ‖ sha256]                     only in downloads (etcd format)
//! ```
//! Files are written to a temporary name, fsynced and renamed, so a crash never leaves a
//! half-written file under a final name; the checksum is verified before anything is
//! loaded, so a damaged file never replaces a good state machine.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use rocksdb::{IteratorMode, WriteBatch, DB};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::raft::types::{decode, encode, LogId, StoredMembership};
use crate::storage::schema::{self, SM_CFS};

const MAGIC: &[u8; 10] = b"SKIFFSNAP1";
const END: u8 = 0xFF;

/// What a snapshot file says about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// The last log entry the state machine had applied.
    pub last_log_id: Option<LogId>,
    /// The membership as of that entry.
    pub membership: StoredMembership,
    /// MVCC revision at that point.
    pub revision: i64,
}

struct HashWriter<W: Write> {
    inner: W,
    hasher: crc32fast::Hasher,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Storage(format!("snapshot file: {e}"))
}

fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily> {
    db.cf_handle(name)
        .ok_or_else(|| StoreError::Corruption(format!("missing column family {name}")))
}

/// Writes the current state machine of `db` to `path`, consistent as of one instant.
///
/// # Errors
/// Storage or file errors.
pub fn write_snapshot(db: &DB, path: &Path) -> Result<SnapshotHeader> {
    let snap = db.snapshot();
    let meta_cf = cf(db, schema::CF_SM_META)?;
    // Stored as `Option<LogId>` by the state machine, hence the flatten.
    let last_log_id: Option<LogId> = snap
        .get_cf(meta_cf, schema::sm_meta::APPLIED)?
        .map(|b| decode::<Option<LogId>>(&b))
        .transpose()?
        .flatten();
    let membership: StoredMembership = snap
        .get_cf(meta_cf, schema::sm_meta::MEMBERSHIP)?
        .map(|b| decode(&b))
        .transpose()?
        .unwrap_or_default();
    let revision = snap
        .get_cf(meta_cf, schema::sm_meta::REVISION)?
        .and_then(|b| b.as_slice().try_into().ok().map(i64::from_be_bytes))
        .unwrap_or(0);
    let header = SnapshotHeader {
        last_log_id,
        membership,
        revision,
    };

    let tmp = path.with_extension("tmp");
    let file = File::create(&tmp).map_err(io)?;
    let mut w = HashWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: crc32fast::Hasher::new(),
    };
    w.write_all(MAGIC).map_err(io)?;
    let hb = encode(&header)?;
    w.write_all(&(hb.len() as u32).to_be_bytes()).map_err(io)?;
    w.write_all(&hb).map_err(io)?;
    for (i, name) in SM_CFS.iter().enumerate() {
        for item in snap.iterator_cf(cf(db, name)?, IteratorMode::Start) {
            let (k, v) = item?;
            w.write_all(&[i as u8]).map_err(io)?;
            w.write_all(&(k.len() as u32).to_be_bytes()).map_err(io)?;
            w.write_all(&k).map_err(io)?;
            w.write_all(&(v.len() as u32).to_be_bytes()).map_err(io)?;
            w.write_all(&v).map_err(io)?;
        }
    }
    w.write_all(&[END]).map_err(io)?;
    let crc = w.hasher.clone().finalize();
    let mut inner = w.inner;
    inner.write_all(&crc.to_be_bytes()).map_err(io)?;
    let file = inner.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(header)
}

struct HashReader<R: Read> {
    inner: R,
    hasher: crc32fast::Hasher,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads a whole snapshot, handing each record (cf index, key, value) to `f`, and checks
/// the checksum. Bytes after the checksum (the padding and sha256 trailer of the etcd
/// download format) are ignored.
fn scan(
    path: &Path,
    mut f: impl FnMut(u8, Vec<u8>, Vec<u8>) -> Result<()>,
) -> Result<SnapshotHeader> {
    let file = File::open(path).map_err(io)?;
    let mut r = HashReader {
        inner: BufReader::with_capacity(1 << 20, file),
        hasher: crc32fast::Hasher::new(),
    };
    let header = read_header(&mut r)?;
    loop {
        let mut tag = [0u8; 1];
        r.read_exact(&mut tag).map_err(io)?;
        if tag[0] == END {
            break;
        }
        if tag[0] as usize >= SM_CFS.len() {
            return Err(StoreError::Corruption(format!(
                "snapshot record for column family {}",
                tag[0]
            )));
        }
        let k = read_chunk(&mut r)?;
        let v = read_chunk(&mut r)?;
        f(tag[0], k, v)?;
    }
    let computed = r.hasher.clone().finalize();
    let mut crc = [0u8; 4];
    r.inner.read_exact(&mut crc).map_err(io)?;
    if computed != u32::from_be_bytes(crc) {
        return Err(StoreError::Corruption("snapshot checksum mismatch".into()));
    }
    Ok(header)
}

/// Checks the whole file (structure and checksum) and returns its header.
///
/// # Errors
/// [`StoreError::Corruption`] if the file is not an intact snapshot.
pub fn verify(path: &Path) -> Result<SnapshotHeader> {
    scan(path, |_, _, _| Ok(()))
}

fn read_header(r: &mut impl Read) -> Result<SnapshotHeader> {
    let mut magic = [0u8; 10];
    r.read_exact(&mut magic)
        .map_err(|_| StoreError::Corruption("not a Skiff snapshot file".into()))?;
    if &magic != MAGIC {
        return Err(StoreError::Corruption("not a Skiff snapshot file".into()));
    }
    let mut l = [0u8; 4];
    r.read_exact(&mut l).map_err(io)?;
    let len = u32::from_be_bytes(l) as usize;
    if len > (64 << 20) {
        return Err(StoreError::Corruption("snapshot header too large".into()));
    }
    let mut hb = vec![0u8; len];
    r.read_exact(&mut hb).map_err(io)?;
    decode(&hb)
}

/// Replaces the state machine in `db` with the snapshot at `path` (verified first).
/// The result is durable when this returns.
///
/// # Errors
/// [`StoreError::Corruption`] for a damaged file (the database is then untouched);
/// storage errors.
pub fn load_snapshot(db: &DB, path: &Path) -> Result<SnapshotHeader> {
    verify(path)?;
    for name in SM_CFS {
        clear_cf(db, name)?;
    }
    let handles: Vec<&rocksdb::ColumnFamily> =
        SM_CFS.iter().map(|n| cf(db, n)).collect::<Result<_>>()?;
    let mut batch = WriteBatch::default();
    let header = scan(path, |i, k, v| {
        batch.put_cf(handles[i as usize], k, v);
        if batch.size_in_bytes() > (4 << 20) {
            db.write(std::mem::take(&mut batch))?;
        }
        Ok(())
    })?;
    db.write(batch)?;
    db.flush_wal(true)?;
    Ok(header)
}

/// Appends what `etcdctl snapshot save` checks: zero padding to a multiple of 512 bytes,
/// then the SHA-256 of everything before it (etcd's snapshot download format).
///
/// # Errors
/// File errors.
pub fn append_download_trailer(path: &Path) -> Result<()> {
    use sha2::{Digest, Sha256};
    let len = std::fs::metadata(path).map_err(io)?.len();
    let pad = (512 - len % 512) % 512;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io)?;
    f.write_all(&vec![0u8; pad as usize]).map_err(io)?;
    drop(f);
    let mut h = Sha256::new();
    let mut r = BufReader::new(File::open(path).map_err(io)?);
    std::io::copy(&mut r, &mut h).map_err(io)?;
    let digest = h.finalize();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io)?;
    f.write_all(&digest).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(())
}

fn read_chunk(r: &mut impl Read) -> Result<Vec<u8>> {
    let mut l = [0u8; 4];
    r.read_exact(&mut l).map_err(io)?;
    let len = u32::from_be_bytes(l) as usize;
    if len > (64 << 20) {
        return Err(StoreError::Corruption("snapshot record too large".into()));
    }
    let mut b = vec![0u8; len];
    r.read_exact(&mut b).map_err(io)?;
    Ok(b)
}

/// Deletes every key of one column family.
///
/// # Errors
/// Storage errors.
pub fn clear_cf(db: &DB, name: &str) -> Result<()> {
    let h = cf(db, name)?;
    let mut batch = WriteBatch::default();
    for item in db.iterator_cf(h, IteratorMode::Start) {
        let (k, _) = item?;
        batch.delete_cf(h, k);
        if batch.len() >= 10_000 {
            db.write(std::mem::take(&mut batch))?;
        }
    }
    db.write(batch)?;
    Ok(())
}
