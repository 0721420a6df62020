//! openraft's storage conformance suite against the RocksDB log store and state machine.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use skiff_store::metrics::Metrics;
use skiff_store::raft::types::{StorageError, TypeConfig};
use skiff_store::raft::{LogStore, StateMachine};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = skiff_store::storage::open_db(&dir.path().join("db")).expect("open db");
        let metrics = Arc::new(Metrics::new());
        let log = LogStore::new(db.clone(), &dir.path().join("wal"), metrics.clone(), false)
            .expect("open log");
        let sm =
            StateMachine::open(db, &dir.path().join("snap"), metrics).expect("open state machine");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("openraft storage suite failed: {e}");
    }
}
