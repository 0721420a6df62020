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
        Arc::default(),
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

/// A batched entry, whose runs of puts and deletes share one write, must give exactly
/// what applying its requests one entry each gives: the same results, revisions,
/// history and final state.
#[tokio::test]
async fn a_batch_applies_exactly_like_its_requests_one_by_one() {
    use skiff_proto::etcdserverpb::{request_op, DeleteRangeRequest, RequestOp, TxnRequest};

    let open = |dir: &std::path::Path| {
        let db = skiff_store::storage::open_db(&dir.join("db")).unwrap();
        StateMachine::open(
            db,
            &dir.join("snap"),
            Arc::new(Metrics::new()),
            Arc::default(),
        )
        .unwrap()
    };
    let (da, db_) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut batched, mut single) = (open(da.path()), open(db_.path()));

    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut index = 0u64;
    for round in 0..30 {
        let mut reqs = Vec::new();
        for i in 0..(1 + next(12)) {
            let key = format!("k{}", next(5)).into_bytes();
            let value = format!("v{round}.{i}").into_bytes();
            reqs.push(match next(9) {
                0..=2 => Request::Put(Pb(PutRequest {
                    key,
                    value,
                    prev_kv: next(2) == 0,
                    ..Default::default()
                })),
                // Fails when the key is absent: a failed request inside a group.
                3 => Request::Put(Pb(PutRequest {
                    key,
                    ignore_value: true,
                    prev_kv: true,
                    ..Default::default()
                })),
                // An unknown lease fails too.
                4 => Request::Put(Pb(PutRequest {
                    key,
                    value,
                    lease: 99,
                    ..Default::default()
                })),
                5 => Request::DeleteRange(Pb(DeleteRangeRequest {
                    key,
                    prev_kv: true,
                    ..Default::default()
                })),
                6 => Request::DeleteRange(Pb(DeleteRangeRequest {
                    key: b"k".to_vec(),
                    range_end: b"k3".to_vec(),
                    prev_kv: next(2) == 0,
                })),
                // Not groupable: ends a run.
                7 => Request::Txn(Pb(TxnRequest {
                    success: vec![RequestOp {
                        request: Some(request_op::Request::RequestPut(PutRequest {
                            key,
                            value,
                            ..Default::default()
                        })),
                    }],
                    ..Default::default()
                })),
                _ => Request::LeaseGrant {
                    id: 1000 + index as i64 * 100 + i as i64,
                    ttl: 60,
                },
            });
        }
        index += 1;
        let out = batched
            .apply([entry(index, Request::Batch(reqs.clone()))])
            .await
            .unwrap();
        let Ok(Response::Batch(got)) = &out[0].result else {
            panic!("not a batch result: {out:?}")
        };
        let mut want = Vec::new();
        for r in reqs {
            let mut o = single.apply([entry(index, r)]).await.unwrap();
            want.push(o.remove(0));
        }
        assert_eq!(got, &want, "round {round}");
    }
    let (a, b) = (&batched.shared.kv, &single.shared.kv);
    assert_eq!(a.current_revision(), b.current_revision());
    assert!(a.current_revision() > 30, "the rounds wrote something");
    assert_eq!(a.hash_kv(0).unwrap(), b.hash_kv(0).unwrap());
    let history = |kv: &skiff_store::mvcc::KvStore| {
        kv.changes(1, kv.current_revision(), usize::MAX, true)
            .unwrap()
            .into_iter()
            .map(|c| (c.rev, c.event))
            .collect::<Vec<_>>()
    };
    assert_eq!(history(a), history(b));
}
