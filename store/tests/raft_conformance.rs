//! openraft's storage conformance suite against the RocksDB log store and state machine.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use skiff_store::metrics::Metrics;
use skiff_store::raft::types::{StorageError, TypeConfig};
use skiff_store::raft::{LogStore, StateMachine};

/// Builds the stores of member `own_id`. The suite's entries name leaders 0 to a few:
/// as member 0 the log store takes a leader's path for them (its flusher thread); as a
/// member that leads none of them it syncs every append inline, as a follower does
/// (`docs/store-follower-inline-sync.md`). Both must pass.
struct Builder {
    own_id: u64,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = skiff_store::storage::open_db(&dir.path().join("db")).expect("open db");
        let metrics = Arc::new(Metrics::new());
        let log = LogStore::new(
            db.clone(),
            &dir.path().join("wal"),
            metrics.clone(),
            false,
            self.own_id,
        )
        .expect("open log");
        let sm = StateMachine::open(db, &dir.path().join("snap"), metrics, log.durability())
            .expect("open state machine");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes_as_the_leader_of_the_entries() {
    if let Err(e) = Suite::test_all(Builder { own_id: 0 }) {
        panic!("openraft storage suite failed: {e}");
    }
}

#[test]
fn openraft_storage_suite_passes_as_a_follower_syncing_inline() {
    if let Err(e) = Suite::test_all(Builder { own_id: u64::MAX }) {
        panic!("openraft storage suite failed: {e}");
    }
}
