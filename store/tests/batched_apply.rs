//! Batched log entries (group commit at the proposer) apply request by request, each
//! with its own revision, and an entry interrupted by a crash is finished without
//! applying any request twice.

use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, LogId};
use skiff_proto::etcdserverpb::PutRequest;
use skiff_store::metrics::Metrics;
use skiff_store::raft::types::{encode, Entry, Pb, Request, Response};
use skiff_store::raft::StateMachine;
use skiff_store::storage::schema::{sm_meta, CF_SM_META};

fn put(k: &str) -> Request {
    Request::Put(Pb(PutRequest {
        key: k.into(),
        value: b"v".to_vec(),
        ..Default::default()
    }))
}

fn entry(index: u64, req: Request) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(req),
    }
}

#[tokio::test]
async fn batched_entry_gives_each_request_its_revision_and_resumes_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let db = skiff_store::storage::open_db(&dir.path().join("db")).unwrap();
    let mut sm = StateMachine::open(
        db.clone(),
        &dir.path().join("snap"),
        Arc::new(Metrics::new()),
    )
    .unwrap();

    let out = sm
        .apply([entry(1, Request::Batch(vec![put("a"), put("b"), put("c")]))])
        .await
        .unwrap();
    let Ok(Response::Batch(results)) = &out[0].result else {
        panic!("not a batch result: {out:?}")
    };
    let revs: Vec<i64> = results.iter().map(|r| r.revision).collect();
    assert_eq!(revs, vec![2, 3, 4]);
    assert_eq!(
        sm.applied_state().await.unwrap().0.map(|l| l.index),
        Some(1)
    );

    // A crash after the first request of entry 2 was written: its marker is on disk.
    let cf = db.cf_handle(CF_SM_META).unwrap();
    let marker = (LogId::new(CommittedLeaderId::new(1, 1u64), 2), 0u64);
    db.put_cf(cf, sm_meta::APPLIED_SUB, encode(&marker).unwrap())
        .unwrap();
    let out = sm
        .apply([entry(2, Request::Batch(vec![put("x"), put("y")]))])
        .await
        .unwrap();
    let Ok(Response::Batch(results)) = &out[0].result else {
        panic!("not a batch result: {out:?}")
    };
    assert!(
        results[0].result.is_err(),
        "the request applied before the crash is not applied again"
    );
    assert_eq!(
        results[1].revision, 5,
        "only the remaining request takes a revision"
    );
    assert_eq!(sm.shared.kv.get(b"x", 5).unwrap(), None);
    assert_eq!(
        sm.shared.kv.get(b"y", 5).unwrap().map(|kv| kv.mod_revision),
        Some(5)
    );
    assert_eq!(
        sm.applied_state().await.unwrap().0.map(|l| l.index),
        Some(2)
    );
}
