//! The counter workload: what an API server does to an object — read it
//! with its `mod_revision`, write the new value in a `Txn` guarded by that
//! revision, and retry on conflict.
//!
//! An increment reads the counter, then tries `Txn(mod_revision == r ⇒
//! put v+1)` (`version == 0` if it does not exist yet), up to
//! [`MAX_ATTEMPTS`] times; success is `ok` with the value written, too many
//! conflicts a `fail`, an unknown Txn outcome `info`. One operation in five
//! is a read; after healing every counter gets a final read.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use skiff_proto::etcdserverpb::TxnRequest;

use super::{complete_error, final_read, pace, parse_i64, spawn_workers, Ctx, Output};
use crate::client::{cmp, op, Client, ClientError};
use crate::history::{EventType, Op};

/// Conflicts tolerated by one increment.
pub const MAX_ATTEMPTS: usize = 20;

fn path(key: &str) -> String {
    format!("/sjp/counter/{key}")
}

async fn read(client: &Client, key: &str) -> Result<Option<i64>, ClientError> {
    let (kv, _) = client.get(&path(key)).await?;
    Ok(kv.and_then(|kv| parse_i64(&kv.value)))
}

/// Runs the workload.
///
/// # Errors
/// If a client task panicked.
pub async fn run(ctx: Arc<Ctx>) -> anyhow::Result<Output> {
    spawn_workers(&ctx, ctx.concurrency, |ctx, w| async move {
        worker(ctx, w).await
    })
    .await?;
    ctx.wait_healed().await;
    let mut failed = false;
    for k in 0..ctx.keys.max(1) {
        let key = format!("c{k}");
        let read = final_read(&ctx, &key, 20, Op::Read(None), |c| {
            let key = key.clone();
            async move {
                let v = read(&c, &key).await?;
                Ok(((), Op::Read(Some(v.unwrap_or(0)))))
            }
        })
        .await;
        failed |= read.is_none();
    }
    Ok(Output {
        final_read_failed: failed,
        ..Output::default()
    })
}

async fn worker(ctx: Arc<Ctx>, w: usize) {
    let rec = ctx.recorder.clone();
    let client = ctx.client_for(w).clone();
    let mut rng = ctx.rng(w);
    let mut process = rec.new_process();
    loop {
        let key = format!("c{}", rng.random_range(0..ctx.keys.max(1)));
        if rng.random_range(0..5) == 0 {
            if !rec.invoke(process, &key, Op::Read(None)) {
                break;
            }
            match read(&client, &key).await {
                Ok(v) => rec.complete(
                    process,
                    EventType::Ok,
                    &key,
                    Op::Read(Some(v.unwrap_or(0))),
                    None,
                ),
                Err(e) => rec.complete(
                    process,
                    EventType::Fail,
                    &key,
                    Op::Read(None),
                    Some(e.to_string()),
                ),
            }
        } else {
            if !rec.invoke(process, &key, Op::Increment(None)) {
                break;
            }
            process = increment(&ctx, &client, &mut rng, process, &key).await;
        }
        pace(&mut rng, 5).await;
    }
}

/// One increment with retries; returns the process to use next.
async fn increment(
    ctx: &Ctx,
    client: &Client,
    rng: &mut rand::rngs::StdRng,
    process: u64,
    key: &str,
) -> u64 {
    let rec = &ctx.recorder;
    let p = path(key);
    for _ in 0..MAX_ATTEMPTS {
        let (kv, _) = match client.get(&p).await {
            Ok(r) => r,
            Err(e) => {
                // Nothing was written by this operation yet.
                rec.complete(
                    process,
                    EventType::Fail,
                    key,
                    Op::Increment(None),
                    Some(e.to_string()),
                );
                return process;
            }
        };
        let (compare, value) = match &kv {
            Some(kv) => (
                cmp::mod_eq(&p, kv.mod_revision),
                parse_i64(&kv.value).unwrap_or(0),
            ),
            None => (cmp::absent(&p), 0),
        };
        let txn = TxnRequest {
            compare: vec![compare],
            success: vec![op::put(&p, &(value + 1).to_string(), 0)],
            failure: vec![],
        };
        match client.txn(txn).await {
            Ok(r) if r.succeeded => {
                rec.complete(
                    process,
                    EventType::Ok,
                    key,
                    Op::Increment(Some(value + 1)),
                    None,
                );
                return process;
            }
            Ok(_) => {
                let ms = rng.random_range(1..=20);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            Err(e) => return complete_error(rec, process, key, Op::Increment(None), &e),
        }
    }
    rec.complete(
        process,
        EventType::Fail,
        key,
        Op::Increment(None),
        Some(format!("{MAX_ATTEMPTS} conflicts")),
    );
    process
}
