//! Restoring a backup: turns a snapshot file (from `etcdctl snapshot save` against
//! Skiff, or a member's own snapshot) into the data dir of a member of a *new* cluster.
//!
//! The key space, revisions, compaction point and leases are kept; raft state, the old
//! membership, member attributes and alarms are dropped, so the restored members form a
//! fresh cluster from their own `--initial-cluster` when they first start (exactly like
//! `etcdutl snapshot restore`). Every member of the new cluster is restored from the
//! same file and started with `--initial-cluster-state new`.

use std::path::Path;

use rocksdb::WriteBatch;

use crate::error::{Result, StoreError};
use crate::raft::snapshot::{self, SnapshotHeader};
use crate::storage::{self, schema};

/// Restores `snapshot_file` into `data_dir`, which must not hold a member yet.
///
/// # Errors
/// A damaged snapshot (`Corruption`), an existing data dir (`InvalidArgument`), or
/// storage errors.
pub fn restore(snapshot_file: &Path, data_dir: &Path) -> Result<SnapshotHeader> {
    let header = snapshot::verify(snapshot_file)?;
    let dir = data_dir.join("member");
    if dir.exists() {
        return Err(StoreError::InvalidArgument(format!(
            "data dir {} already holds a member; restore into an empty directory",
            data_dir.display()
        )));
    }
    std::fs::create_dir_all(&dir).map_err(|e| StoreError::Storage(format!("{dir:?}: {e}")))?;
    let db = storage::open_db(&dir.join("db"))?;
    snapshot::load_snapshot(&db, snapshot_file)?;
    let cf = db
        .cf_handle(schema::CF_SM_META)
        .ok_or_else(|| StoreError::Corruption("sm_meta".into()))?;
    let mut b = WriteBatch::default();
    for k in [
        schema::sm_meta::APPLIED,
        schema::sm_meta::MEMBERSHIP,
        schema::sm_meta::MEMBERS,
        schema::sm_meta::ALARMS,
    ] {
        b.delete_cf(cf, k);
    }
    db.write(b)?;
    db.flush_wal(true)?;
    Ok(header)
}
