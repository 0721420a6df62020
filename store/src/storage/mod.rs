//! RocksDB: opening a member's database, and its schema.
//!
//! # Layout
//! - [`schema`]: every column family and key encoding, with byte layouts.

pub mod schema;

use std::path::Path;
use std::sync::Arc;

use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, Options, DB};

use crate::error::Result;

/// Opens (creating if needed) the database at `path` with every column family.
///
/// Memory is bounded on purpose — one shared 32 MiB block cache and small memtables —
/// because a store member should cost little to run next to the workloads it serves.
///
/// # Errors
/// RocksDB errors (e.g. the directory is locked by another process).
pub fn open_db(path: &Path) -> Result<Arc<DB>> {
    let cache = Cache::new_lru_cache(32 << 20);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&cache);
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);

    let cf_opts = |write_buffer: usize| {
        let mut o = Options::default();
        o.set_block_based_table_factory(&table);
        o.set_write_buffer_size(write_buffer);
        o.set_max_write_buffer_number(3);
        o.set_compression_type(rocksdb::DBCompressionType::Lz4);
        o
    };
    let cfs: Vec<ColumnFamilyDescriptor> = schema::ALL_CFS
        .iter()
        .map(|name| {
            let wb = match *name {
                schema::CF_REV | schema::CF_RAFT_LOG => 16 << 20,
                _ => 4 << 20,
            };
            ColumnFamilyDescriptor::new(*name, cf_opts(wb))
        })
        .collect();

    let mut db_opts = Options::default();
    db_opts.create_if_missing(true);
    db_opts.create_missing_column_families(true);
    db_opts.set_max_background_jobs(2);
    db_opts.set_db_write_buffer_size(64 << 20);
    db_opts.set_max_total_wal_size(128 << 20);
    // The state machine's WAL writes stay in memory (up to the writer's buffer) until a
    // sync needs them: its writes are never synced on their own (the raft log, in its
    // own files, is what makes an entry durable; `purge` syncs this WAL first).
    db_opts.set_manual_wal_flush(true);
    db_opts.set_keep_log_file_num(3);
    let db = DB::open_cf_descriptors(&db_opts, path, cfs)?;
    Ok(Arc::new(db))
}

/// Approximate bytes the database occupies (SST files + memtables + WAL-free estimate).
pub fn db_size(db: &DB) -> u64 {
    let mut total = 0u64;
    for name in schema::ALL_CFS {
        if let Some(cf) = db.cf_handle(name) {
            for prop in [
                "rocksdb.total-sst-files-size",
                "rocksdb.cur-size-all-mem-tables",
            ] {
                total += db
                    .property_int_value_cf(cf, prop)
                    .ok()
                    .flatten()
                    .unwrap_or(0);
            }
        }
    }
    total
}

/// Approximate bytes of live data (what a defragmented database would occupy).
pub fn db_size_in_use(db: &DB) -> u64 {
    let mut total = 0u64;
    for name in schema::ALL_CFS {
        if let Some(cf) = db.cf_handle(name) {
            total += db
                .property_int_value_cf(cf, "rocksdb.estimate-live-data-size")
                .ok()
                .flatten()
                .unwrap_or(0);
            total += db
                .property_int_value_cf(cf, "rocksdb.cur-size-all-mem-tables")
                .ok()
                .flatten()
                .unwrap_or(0);
        }
    }
    total
}

/// Compacts every column family fully (etcd's Defragment): reclaims the space of
/// deleted and compacted data.
pub fn defragment(db: &DB) {
    for name in schema::ALL_CFS {
        if let Some(cf) = db.cf_handle(name) {
            db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        }
    }
}
