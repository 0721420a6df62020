//! The register workload: reads, writes and compare-and-sets on a few keys,
//! checked for linearizability per key.
//!
//! - read: a linearizable `Range` of the key (a missing key reads `null`);
//! - write: a `Put` of a value unique in the run;
//! - cas: a `Txn` comparing the key's value with the value this client last
//!   saw for it (or its absence), putting a new unique value on success; a
//!   failed comparison is a `fail` (nothing was written).
//!
//! Half the operations are reads: stale reads (a partitioned former leader
//! answering from its own state) are what the checker catches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use rand::Rng;

use super::{complete_error, pace, parse_i64, spawn_workers, Ctx, Output};
use crate::client::{cmp, op};
use crate::history::{Cas, EventType, Op};
use skiff_proto::etcdserverpb::TxnRequest;

fn path(key: &str) -> String {
    format!("/sjp/register/{key}")
}

/// Runs the workload (registers need no final reads).
///
/// # Errors
/// If a client task panicked.
pub async fn run(ctx: Arc<Ctx>) -> anyhow::Result<Output> {
    let next_value = Arc::new(AtomicI64::new(1));
    spawn_workers(&ctx, ctx.concurrency, move |ctx, w| {
        let next_value = next_value.clone();
        async move { worker(ctx, w, next_value).await }
    })
    .await?;
    Ok(Output::default())
}

async fn worker(ctx: Arc<Ctx>, w: usize, next_value: Arc<AtomicI64>) {
    let rec = ctx.recorder.clone();
    let client = ctx.client_for(w).clone();
    let mut rng = ctx.rng(w);
    let mut process = rec.new_process();
    let mut seen: HashMap<String, Option<i64>> = HashMap::new();
    // Bounded by the recorder: `invoke` refuses once the run is done.
    loop {
        let key = format!("r{}", rng.random_range(0..ctx.keys.max(1)));
        let p = path(&key);
        let dice = rng.random_range(0..100);
        if dice < 50 {
            if !rec.invoke(process, &key, Op::Read(None)) {
                break;
            }
            match client.get(&p).await {
                Ok((kv, _)) => {
                    let value = kv.map(|kv| parse_i64(&kv.value));
                    match value {
                        Some(None) => rec.complete(
                            process,
                            EventType::Fail,
                            &key,
                            Op::Read(None),
                            Some("unparseable value".into()),
                        ),
                        Some(Some(v)) => {
                            seen.insert(key.clone(), Some(v));
                            rec.complete(process, EventType::Ok, &key, Op::Read(Some(v)), None);
                        }
                        None => {
                            seen.insert(key.clone(), None);
                            rec.complete(process, EventType::Ok, &key, Op::Read(None), None);
                        }
                    }
                }
                Err(e) => rec.complete(
                    process,
                    EventType::Fail,
                    &key,
                    Op::Read(None),
                    Some(e.to_string()),
                ),
            }
        } else if dice < 75 {
            let v = next_value.fetch_add(1, Ordering::Relaxed);
            if !rec.invoke(process, &key, Op::Write(v)) {
                break;
            }
            match client.put(&p, &v.to_string(), 0).await {
                Ok(_) => {
                    seen.insert(key.clone(), Some(v));
                    rec.complete(process, EventType::Ok, &key, Op::Write(v), None);
                }
                Err(e) => process = complete_error(&rec, process, &key, Op::Write(v), &e),
            }
        } else {
            let new = next_value.fetch_add(1, Ordering::Relaxed);
            let expected = seen.get(&key).copied().flatten();
            let cas = Op::Cas(Cas { expected, new });
            if !rec.invoke(process, &key, cas.clone()) {
                break;
            }
            let compare = match expected {
                Some(e) => cmp::value_eq(&p, &e.to_string()),
                None => cmp::absent(&p),
            };
            let txn = TxnRequest {
                compare: vec![compare],
                success: vec![op::put(&p, &new.to_string(), 0)],
                failure: vec![],
            };
            match client.txn(txn).await {
                Ok(r) if r.succeeded => {
                    seen.insert(key.clone(), Some(new));
                    rec.complete(process, EventType::Ok, &key, cas, None);
                }
                Ok(_) => {
                    rec.complete(
                        process,
                        EventType::Fail,
                        &key,
                        cas,
                        Some("comparison failed".into()),
                    );
                }
                Err(e) => process = complete_error(&rec, process, &key, cas, &e),
            }
        }
        pace(&mut rng, 5).await;
    }
}
