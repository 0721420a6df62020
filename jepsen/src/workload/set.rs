//! The set workload: unique elements added as keys under one prefix, read
//! back with prefix ranges, and a final read after the cluster is healed.
//!
//! - add: a `Put` of `/sjp/set/e<element>` (zero-padded);
//! - read-set: a linearizable prefix `Range`, the elements parsed from the
//!   keys. One operation in ten is a read; stale reads count as invalid,
//!   because reads are meant to be linearizable.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use rand::Rng;
use skiff_proto::etcdserverpb::RangeRequest;

use super::{complete_error, final_read, pace, parse_i64, spawn_workers, Ctx, Output};
use crate::client::{prefix_end, Client, ClientError};
use crate::history::{EventType, Op};

const PREFIX: &str = "/sjp/set/";
/// The history key of the set.
pub const KEY: &str = "set";

async fn read_set(client: &Client) -> Result<Vec<i64>, ClientError> {
    let r = client
        .range(RangeRequest {
            key: PREFIX.as_bytes().to_vec(),
            range_end: prefix_end(PREFIX.as_bytes()),
            keys_only: true,
            ..Default::default()
        })
        .await?;
    let mut elements: Vec<i64> = r
        .kvs
        .iter()
        .filter_map(|kv| kv.key.strip_prefix(format!("{PREFIX}e").as_bytes()))
        .filter_map(parse_i64)
        .collect();
    elements.sort_unstable();
    Ok(elements)
}

/// Runs the workload.
///
/// # Errors
/// If a client task panicked.
pub async fn run(ctx: Arc<Ctx>) -> anyhow::Result<Output> {
    let next = Arc::new(AtomicI64::new(0));
    spawn_workers(&ctx, ctx.concurrency, move |ctx, w| {
        let next = next.clone();
        async move { worker(ctx, w, next).await }
    })
    .await?;
    ctx.wait_healed().await;
    let read = final_read(&ctx, KEY, 20, Op::ReadSet(None), |c| async move {
        let set = read_set(&c).await?;
        Ok(((), Op::ReadSet(Some(set))))
    })
    .await;
    Ok(Output {
        final_read_failed: read.is_none(),
        ..Output::default()
    })
}

async fn worker(ctx: Arc<Ctx>, w: usize, next: Arc<AtomicI64>) {
    let rec = ctx.recorder.clone();
    let client = ctx.client_for(w).clone();
    let mut rng = ctx.rng(w);
    let mut process = rec.new_process();
    loop {
        if rng.random_range(0..10) == 0 {
            if !rec.invoke(process, KEY, Op::ReadSet(None)) {
                break;
            }
            match read_set(&client).await {
                Ok(set) => rec.complete(process, EventType::Ok, KEY, Op::ReadSet(Some(set)), None),
                Err(e) => rec.complete(
                    process,
                    EventType::Fail,
                    KEY,
                    Op::ReadSet(None),
                    Some(e.to_string()),
                ),
            }
        } else {
            let e = next.fetch_add(1, Ordering::Relaxed);
            if !rec.invoke(process, KEY, Op::Add(e)) {
                break;
            }
            let key = format!("{PREFIX}e{e:012}");
            match client.put(&key, &e.to_string(), 0).await {
                Ok(_) => rec.complete(process, EventType::Ok, KEY, Op::Add(e), None),
                Err(err) => process = complete_error(&rec, process, KEY, Op::Add(e), &err),
            }
        }
        pace(&mut rng, 5).await;
    }
}
