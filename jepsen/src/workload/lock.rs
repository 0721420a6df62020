//! The lock workload: a lock built on a lease and revision fencing, as an
//! elected controller uses one.
//!
//! A cycle of one client on lock `l<i>`:
//!
//! 1. grant a lease (TTL [`LEASE_TTL`] s; not in the history);
//! 2. **acquire**: `Txn(version(lock) == 0 ⇒ put lock with the lease)`,
//!    polled for up to 2 s; the fence is the revision of that put (the lock
//!    key's create revision);
//! 3. **act** a few times: `Txn(create_revision(lock) == fence ⇒ put
//!    resource = fence)`: the resource accepts an action only while the
//!    holder's lock key is the current one;
//! 4. **release**: `Txn(create_revision(lock) == fence ⇒ delete lock)`, then
//!    revoke the lease.
//!
//! A holder paused past its lease's expiry finds its actions rejected; the
//! lock checker flags two holders granted the same fence, fences going
//! backwards, and the resource accepting a stale or unheld fence.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use skiff_proto::etcdserverpb::TxnRequest;

use super::{complete_error, pace, spawn_workers, Ctx, Output};
use crate::client::{cmp, op};
use crate::history::{EventType, Op};

/// Seconds a lock lease lives without keep-alive.
pub const LEASE_TTL: i64 = 5;
/// Acquisition attempts (50 ms apart) before giving up.
const ACQUIRE_ATTEMPTS: usize = 40;

/// Runs the workload (no final reads: every act is judged as it happened).
///
/// # Errors
/// If a client task panicked.
pub async fn run(ctx: Arc<Ctx>) -> anyhow::Result<Output> {
    spawn_workers(&ctx, ctx.concurrency, |ctx, w| async move {
        worker(ctx, w).await
    })
    .await?;
    Ok(Output::default())
}

async fn worker(ctx: Arc<Ctx>, w: usize) {
    let rec = ctx.recorder.clone();
    let client = ctx.client_for(w).clone();
    let mut rng = ctx.rng(w);
    let mut process = rec.new_process();
    // Bounded: every cycle invokes at least one operation or sleeps, and
    // `invoke` refuses once the run is done.
    while !rec.done() {
        let lock = format!("l{}", rng.random_range(0..ctx.keys.max(1)));
        let lock_key = format!("/sjp/lock/{lock}");
        let resource = format!("/sjp/lock-resource/{lock}");
        let lease = match client.lease_grant(LEASE_TTL).await {
            Ok(id) => id,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        // Acquire.
        if !rec.invoke(process, &lock, Op::Acquire(None)) {
            let _ = client.lease_revoke(lease).await;
            break;
        }
        let mut fence = None;
        let mut unknown = None;
        for _ in 0..ACQUIRE_ATTEMPTS {
            let txn = TxnRequest {
                compare: vec![cmp::absent(&lock_key)],
                success: vec![op::put(&lock_key, &process.to_string(), lease)],
                failure: vec![],
            };
            match client.txn(txn).await {
                Ok(r) if r.succeeded => {
                    fence = r.header.map(|h| h.revision);
                    break;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) if e.is_definite() => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => {
                    unknown = Some(e);
                    break;
                }
            }
        }
        let fence = match (fence, unknown) {
            (Some(f), _) => {
                rec.complete(process, EventType::Ok, &lock, Op::Acquire(Some(f)), None);
                f
            }
            (None, Some(e)) => {
                process = complete_error(&rec, process, &lock, Op::Acquire(None), &e);
                let _ = client.lease_revoke(lease).await;
                continue;
            }
            (None, None) => {
                rec.complete(
                    process,
                    EventType::Fail,
                    &lock,
                    Op::Acquire(None),
                    Some("lock busy".into()),
                );
                let _ = client.lease_revoke(lease).await;
                continue;
            }
        };
        // Act.
        let mut holding = true;
        for _ in 0..rng.random_range(1..=3) {
            if !rec.invoke(process, &lock, Op::Act(fence)) {
                holding = false;
                break;
            }
            let txn = TxnRequest {
                compare: vec![cmp::create_eq(&lock_key, fence)],
                success: vec![op::put(&resource, &fence.to_string(), 0)],
                failure: vec![],
            };
            match client.txn(txn).await {
                Ok(r) if r.succeeded => {
                    rec.complete(process, EventType::Ok, &lock, Op::Act(fence), None)
                }
                Ok(_) => {
                    rec.complete(
                        process,
                        EventType::Fail,
                        &lock,
                        Op::Act(fence),
                        Some("fence rejected".into()),
                    );
                    holding = false;
                    break;
                }
                Err(e) => {
                    let next = complete_error(&rec, process, &lock, Op::Act(fence), &e);
                    holding = next == process;
                    process = next;
                    break;
                }
            }
            pace(&mut rng, 20).await;
        }
        // Release (only by the process that holds it).
        if holding && rec.invoke(process, &lock, Op::Release(fence)) {
            let txn = TxnRequest {
                compare: vec![cmp::create_eq(&lock_key, fence)],
                success: vec![op::delete(&lock_key)],
                failure: vec![],
            };
            match client.txn(txn).await {
                Ok(r) if r.succeeded => {
                    rec.complete(process, EventType::Ok, &lock, Op::Release(fence), None)
                }
                Ok(_) => rec.complete(
                    process,
                    EventType::Fail,
                    &lock,
                    Op::Release(fence),
                    Some("not held".into()),
                ),
                Err(e) => process = complete_error(&rec, process, &lock, Op::Release(fence), &e),
            }
        }
        let _ = client.lease_revoke(lease).await;
        pace(&mut rng, 10).await;
    }
}
