//! The watch workload: writers put and delete keys under a prefix while one
//! watcher per member streams the prefix from the first revision on,
//! reconnecting (to the next member) after every error and resuming from
//! its last received revision + 1.
//!
//! At the end the harness heals the cluster, a writer puts a sentinel key
//! (revision `S`), the prefix is read *at revision `S`* (the final state),
//! and every watcher runs until it has received revision `S` (or 30 s pass).
//! The [`WatchLog`] holds the initial state, every watcher's events, the
//! writers' acknowledged changes with their revisions, and the final state;
//! the watch checker judges it.
//!
//! A watcher whose resume revision was compacted is cancelled by the server
//! with the compact revision; it then continues as a new client record
//! (`w<i>.<n>`) starting there, since it cannot have seen what was
//! compacted.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use skiff_proto::etcdserverpb::{watch_request, RangeRequest, WatchCreateRequest, WatchRequest};
use skiff_proto::mvccpb;
use tokio::sync::watch as signal;

use super::{complete_error, pace, spawn_workers, Ctx, Output};
use crate::checker::watch::{ChangeKind, Kv, Snapshot, WatchClient, WatchEvent, WatchLog};
use crate::client::{prefix_end, Client, ClientError};
use crate::history::{EventType, Op};

const PREFIX: &str = "/sjp/watch/";
const SENTINEL: &str = "/sjp/watch/zz-end";
/// Keys the writers use.
const KEYS: usize = 8;

/// When watchers may stop: the sentinel revision and a hard deadline.
type Until = Option<(i64, Instant)>;

async fn read_prefix(client: &Client, revision: i64) -> Result<Snapshot, ClientError> {
    let r = client
        .range(RangeRequest {
            key: PREFIX.as_bytes().to_vec(),
            range_end: prefix_end(PREFIX.as_bytes()),
            revision,
            ..Default::default()
        })
        .await?;
    let header_rev = r.header.map_or(0, |h| h.revision);
    Ok(Snapshot {
        revision: if revision > 0 { revision } else { header_rev },
        kvs: r
            .kvs
            .into_iter()
            .map(|kv| Kv {
                key: String::from_utf8_lossy(&kv.key).into_owned(),
                value: String::from_utf8_lossy(&kv.value).into_owned(),
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
                version: kv.version,
            })
            .collect(),
    })
}

/// Tries `f` through each member in turn, up to 20 passes 500 ms apart.
async fn any_member<T, F, Fut>(ctx: &Ctx, mut f: F) -> Option<T>
where
    F: FnMut(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    for _ in 0..20 {
        for c in &ctx.clients {
            if let Ok(v) = f(c.clone()).await {
                return Some(v);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// Runs the workload.
///
/// # Errors
/// If the initial state cannot be read, or a task panicked.
pub async fn run(ctx: Arc<Ctx>) -> anyhow::Result<Output> {
    let initial = any_member(&ctx, |c| async move { read_prefix(&c, 0).await })
        .await
        .ok_or_else(|| anyhow::anyhow!("could not read the initial state of {PREFIX}"))?;
    let start = initial.revision + 1;
    let (until_tx, until_rx) = signal::channel::<Until>(None);
    let watchers: Vec<_> = (0..ctx.clients.len().max(2))
        .map(|i| tokio::spawn(watcher(ctx.clone(), i, start, until_rx.clone())))
        .collect();

    let writes = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(AtomicI64::new(1));
    {
        let (writes, next) = (writes.clone(), next.clone());
        spawn_workers(&ctx, ctx.concurrency, move |ctx, w| {
            let (writes, next) = (writes.clone(), next.clone());
            async move { writer(ctx, w, writes, next).await }
        })
        .await?;
    }

    ctx.wait_healed().await;
    let sentinel = any_member(&ctx, |c| async move { c.put(SENTINEL, "end", 0).await }).await;
    let final_state = match sentinel {
        Some(s) => {
            if let Ok(mut w) = writes.lock() {
                w.push(WatchEvent::put(s, SENTINEL, "end"));
            }
            any_member(&ctx, |c| async move { read_prefix(&c, s).await }).await
        }
        None => None,
    };
    let until = sentinel.map_or((i64::MAX, Instant::now()), |s| {
        (s, Instant::now() + Duration::from_secs(30))
    });
    let _ = until_tx.send(Some(until));
    let mut clients = Vec::new();
    for w in watchers {
        clients.extend(
            w.await
                .map_err(|e| anyhow::anyhow!("watcher task failed: {e}"))?,
        );
    }
    let writes = writes.lock().map(|w| w.clone()).unwrap_or_default();
    Ok(Output {
        final_read_failed: false,
        fault_windows: Vec::new(),
        watch_log: Some(WatchLog {
            prefix: PREFIX.to_owned(),
            initial: Some(initial),
            clients,
            writes,
            final_state,
        }),
    })
}

async fn writer(
    ctx: Arc<Ctx>,
    w: usize,
    writes: Arc<Mutex<Vec<WatchEvent>>>,
    next: Arc<AtomicI64>,
) {
    let rec = ctx.recorder.clone();
    let client = ctx.client_for(w).clone();
    let mut rng = ctx.rng(w);
    let mut process = rec.new_process();
    while !rec.done() {
        let short = format!("k{}", rng.random_range(0..KEYS));
        let key = format!("{PREFIX}{short}");
        if rng.random_range(0..100) < 85 {
            let v = next.fetch_add(1, Ordering::Relaxed);
            if !rec.invoke(process, &short, Op::Write(v)) {
                break;
            }
            match client.put(&key, &v.to_string(), 0).await {
                Ok(rev) => {
                    rec.complete(process, EventType::Ok, &short, Op::Write(v), None);
                    if let Ok(mut ws) = writes.lock() {
                        ws.push(WatchEvent::put(rev, &key, &v.to_string()));
                    }
                }
                Err(e) => process = complete_error(&rec, process, &short, Op::Write(v), &e),
            }
        } else if let Ok((deleted, rev)) = client.delete(&key).await {
            // Deletes are not in the history (it has no delete operation);
            // the watch log records the acknowledged ones.
            if deleted > 0 {
                if let Ok(mut ws) = writes.lock() {
                    ws.push(WatchEvent {
                        revision: rev,
                        key: key.clone(),
                        kind: ChangeKind::Delete,
                        value: None,
                        create_revision: 0,
                        mod_revision: rev,
                        version: 0,
                    });
                }
            }
        }
        pace(&mut rng, 10).await;
    }
}

fn convert(ev: &mvccpb::Event) -> Option<WatchEvent> {
    let kv = ev.kv.as_ref()?;
    let delete = ev.r#type == mvccpb::event::EventType::Delete as i32;
    Some(WatchEvent {
        revision: kv.mod_revision,
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        kind: if delete {
            ChangeKind::Delete
        } else {
            ChangeKind::Put
        },
        value: (!delete).then(|| String::from_utf8_lossy(&kv.value).into_owned()),
        create_revision: if delete { 0 } else { kv.create_revision },
        mod_revision: kv.mod_revision,
        version: if delete { 0 } else { kv.version },
    })
}

fn finished(until: &signal::Receiver<Until>, next: i64) -> bool {
    match *until.borrow() {
        Some((sentinel, deadline)) => next > sentinel || Instant::now() >= deadline,
        None => false,
    }
}

/// One watcher: returns its client records (more than one if it was
/// cancelled by compaction).
async fn watcher(
    ctx: Arc<Ctx>,
    i: usize,
    start: i64,
    until: signal::Receiver<Until>,
) -> Vec<WatchClient> {
    let n = ctx.clients.len();
    let mut done = Vec::new();
    let mut generation = 0;
    let new_client = |generation: usize, start: i64| WatchClient {
        id: if generation == 0 {
            format!("w{i}")
        } else {
            format!("w{i}.{generation}")
        },
        start_revision: start,
        progress_revision: None,
        events: Vec::new(),
    };
    let mut current = new_client(0, start);
    let mut next = start;
    let mut member = i;
    // Absolute bound, whatever the signals do.
    let hard_stop = ctx.recorder.deadline() + Duration::from_secs(600);
    'connect: for _ in 0..100_000 {
        if finished(&until, next) || Instant::now() >= hard_stop {
            break;
        }
        let client = &ctx.clients[member % n];
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: PREFIX.as_bytes().to_vec(),
                    range_end: prefix_end(PREFIX.as_bytes()),
                    start_revision: next,
                    ..Default::default()
                },
            )),
        };
        if tx.send(create).await.is_err() {
            break;
        }
        let stream = tokio::time::timeout(
            client.timeout(),
            client
                .watch()
                .watch(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
        .await;
        let mut stream = match stream {
            Ok(Ok(r)) => r.into_inner(),
            _ => {
                member += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        // `tx` stays alive with the stream: closing the request side ends
        // the watch on etcd.
        loop {
            if finished(&until, next) || Instant::now() >= hard_stop {
                break 'connect;
            }
            match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
                Err(_) => continue,
                Ok(Err(_)) | Ok(Ok(None)) => {
                    member += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue 'connect;
                }
                Ok(Ok(Some(msg))) => {
                    if msg.canceled {
                        if msg.compact_revision > 0 {
                            generation += 1;
                            done.push(std::mem::replace(
                                &mut current,
                                new_client(generation, msg.compact_revision),
                            ));
                            next = msg.compact_revision;
                        }
                        member += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue 'connect;
                    }
                    for ev in &msg.events {
                        if let Some(e) = convert(ev) {
                            next = next.max(e.revision + 1);
                            current.events.push(e);
                        }
                    }
                }
            }
        }
    }
    drop(until);
    done.push(current);
    done
}
