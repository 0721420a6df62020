//! Watch fan-out: `clients` watchers on one prefix, spread over the connections; one
//! writer puts `watch_events` keys under it, one at a time. Each value carries its
//! sequence number and the writer's send time, so every watcher measures the delivery
//! latency of every event and checks it got each acknowledged event exactly once, in order.
//!
//! ```text
//! writer ── put w/…07 = "0000000000000007|<send µs>|....." ──▶ store ──▶ watcher 0..N
//!                                              latency = receive µs - send µs, per event
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::channel::mpsc;
use futures::{stream, StreamExt, TryStreamExt};
use skiff_proto::etcdserverpb::watch_request::RequestUnion;
use skiff_proto::etcdserverpb::{PutRequest, WatchCreateRequest, WatchRequest, WatchResponse};
use skiff_proto::mvccpb::event::EventType;
use tonic::Streaming;

use super::conn::{kv, watch, Conn};
use super::keys::{prefix_end, value, KeySpace};
use super::report::CaseResult;
use super::runner::open_channels;
use super::stats::Recorder;
use super::workload::{Case, Params};

/// Prefix of the watched keys.
pub const WATCH_PREFIX: &str = "w/";
/// Bytes of a value's header: 16 hex digits of sequence, 16 of send time.
const HEADER: usize = 32;
/// How long watchers keep listening for missing events after the writer is done.
const GRACE: Duration = Duration::from_secs(5);
/// Watch streams opened at once while setting up.
const OPEN_CONCURRENCY: usize = 32;

/// Microseconds since the first call in this process: the clock shared by writer and
/// watchers.
fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The value of event `seq`, sent at `sent_us`.
fn event_value(seq: u64, sent_us: u64, size: usize) -> Vec<u8> {
    value(
        size.max(HEADER),
        format!("{seq:016x}{sent_us:016x}").as_bytes(),
    )
}

/// `(seq, sent_us)` from an event value, `None` if it is not one of ours.
fn parse_event_value(v: &[u8]) -> Option<(u64, u64)> {
    let head = std::str::from_utf8(v.get(..HEADER)?).ok()?;
    let seq = u64::from_str_radix(&head[..16], 16).ok()?;
    let sent = u64::from_str_radix(&head[16..], 16).ok()?;
    Some((seq, sent))
}

/// What one watcher saw.
struct Seen {
    /// Deliveries per sequence number.
    counts: Vec<u32>,
    latencies: Recorder,
    out_of_order: u64,
    /// Events that were not ours, or a stream that failed or was canceled.
    errors: u64,
    last_delivery: Option<Instant>,
}

/// Runs the watch fan-out case.
///
/// # Errors
/// When connections fail or a watcher cannot be created. Missing or duplicate deliveries
/// are not errors here: they mark the result failed, with counts in its note.
pub async fn run_watch(endpoints: &[String], params: &Params, case: Case) -> Result<CaseResult> {
    let events = params.watch_events.max(1);
    let keys = KeySpace::new(WATCH_PREFIX, params.key_size, events)?;
    let channels = open_channels(endpoints, params.connections.min(case.clients)).await?;

    let watchers: Vec<_> = stream::iter(0..case.clients)
        .map(|w| {
            let open = open_watcher(channels[w % channels.len()].clone(), keys.prefix());
            async move {
                tokio::time::timeout(params.op_timeout, open)
                    .await
                    .map_err(|_| anyhow!("creating watcher {w} timed out"))?
            }
        })
        .buffer_unordered(OPEN_CONCURRENCY)
        .try_collect()
        .await?;

    let writer_done = Arc::new(AtomicBool::new(false));
    let hard_stop = Instant::now() + params.max_duration + GRACE;
    let tasks: Vec<_> = watchers
        .into_iter()
        .map(|(requests, responses)| {
            let done = writer_done.clone();
            tokio::spawn(watcher_loop(requests, responses, events, done, hard_stop))
        })
        .collect();

    // The writer: one put at a time on the first connection.
    let start = Instant::now();
    let deadline = start + params.max_duration;
    let mut writer = kv(channels[0].clone());
    let mut acked = vec![false; events as usize];
    let mut write_errors = 0u64;
    for seq in 0..events {
        if Instant::now() >= deadline {
            break;
        }
        let put = writer.put(PutRequest {
            key: keys.key(seq),
            value: event_value(seq, now_us(), params.value_size),
            ..Default::default()
        });
        match tokio::time::timeout(params.op_timeout, put).await {
            Ok(Ok(_)) => acked[seq as usize] = true,
            _ => write_errors += 1,
        }
    }
    let write_elapsed = start.elapsed();
    writer_done.store(true, Ordering::Release);

    let mut latencies = Recorder::new();
    let (mut missing, mut duplicates, mut out_of_order, mut errors) = (0u64, 0u64, 0u64, 0u64);
    let mut last = start;
    for task in tasks {
        let seen = task
            .await
            .map_err(|e| anyhow!("watcher task failed: {e}"))?;
        latencies.merge(&seen.latencies);
        out_of_order += seen.out_of_order;
        errors += seen.errors;
        last = last.max(seen.last_delivery.unwrap_or(start));
        for (seq, &n) in seen.counts.iter().enumerate() {
            // A write that timed out has an unknown outcome: its event may come or not.
            if acked[seq] && n == 0 {
                missing += 1;
            }
            duplicates += u64::from(n.saturating_sub(1));
        }
    }
    let acked_count = acked.iter().filter(|a| **a).count() as u64;
    let expected = acked_count * case.clients as u64;
    let exactly_once = missing == 0 && duplicates == 0 && out_of_order == 0 && errors == 0;
    let writer_rate = acked_count as f64 / write_elapsed.as_secs_f64().max(1e-9);
    let mut note = format!(
        "{} of {expected} deliveries ({acked_count} events × {} watchers), writer {writer_rate:.0} puts/s",
        latencies.ops(),
        case.clients,
    );
    if exactly_once {
        note.insert_str(0, "exactly once: ");
    } else {
        note = format!(
            "NOT exactly once: missing {missing}, duplicate {duplicates}, out of order \
             {out_of_order}, stream errors {errors}; {note}"
        );
    }
    if write_errors > 0 {
        note.push_str(&format!(", {write_errors} put errors"));
    }
    let mut result = CaseResult::new(case, latencies.summary(last - start), note);
    result.failed = !exactly_once || acked_count == 0;
    Ok(result)
}

/// Opens a Watch stream on `channel` and creates a watch on `prefix`, waiting for the
/// `created` answer.
async fn open_watcher(
    channel: Conn,
    prefix: &[u8],
) -> Result<(
    mpsc::UnboundedSender<WatchRequest>,
    Streaming<WatchResponse>,
)> {
    let (requests, rx) = mpsc::unbounded();
    requests
        .unbounded_send(WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                ..Default::default()
            })),
        })
        .map_err(|_| anyhow!("watch request channel closed"))?;
    let mut responses = watch(channel)
        .watch(rx)
        .await
        .context("opening a watch stream")?
        .into_inner();
    let first = responses
        .message()
        .await
        .context("no answer to watch create")?
        .ok_or_else(|| anyhow!("watch stream ended before created"))?;
    if !first.created || first.canceled {
        bail!("watch not created: {:?}", first.cancel_reason);
    }
    Ok((requests, responses))
}

/// Receives until every one of `events` sequence numbers was seen, or the writer is done
/// and `GRACE` passed, or `hard_stop`.
async fn watcher_loop(
    // Held so the request side of the stream stays open while receiving.
    _requests: mpsc::UnboundedSender<WatchRequest>,
    mut responses: Streaming<WatchResponse>,
    events: u64,
    writer_done: Arc<AtomicBool>,
    hard_stop: Instant,
) -> Seen {
    let mut seen = Seen {
        counts: vec![0; events as usize],
        latencies: Recorder::new(),
        out_of_order: 0,
        errors: 0,
        last_delivery: None,
    };
    let mut distinct = 0u64;
    let mut last_seq: Option<u64> = None;
    let mut grace_end: Option<Instant> = None;
    while distinct < events {
        let now = Instant::now();
        if now >= hard_stop || grace_end.is_some_and(|g| now >= g) {
            break;
        }
        if grace_end.is_none() && writer_done.load(Ordering::Acquire) {
            grace_end = Some(now + GRACE);
        }
        let msg = match tokio::time::timeout(Duration::from_millis(200), responses.message()).await
        {
            Err(_) => continue,
            Ok(Ok(Some(msg))) => msg,
            Ok(Ok(None)) | Ok(Err(_)) => {
                seen.errors += 1;
                break;
            }
        };
        if msg.canceled {
            seen.errors += 1;
            break;
        }
        let received = now_us();
        for event in msg.events {
            let parsed = event
                .kv
                .as_ref()
                .filter(|_| event.r#type == EventType::Put as i32)
                .and_then(|kv| parse_event_value(&kv.value));
            let Some((seq, sent)) = parsed.filter(|(s, _)| *s < events) else {
                seen.errors += 1;
                continue;
            };
            let count = &mut seen.counts[seq as usize];
            if *count == 0 {
                distinct += 1;
            }
            *count += 1;
            if last_seq.is_some_and(|l| seq <= l) {
                seen.out_of_order += 1;
            }
            last_seq = Some(seq);
            seen.latencies
                .record(Duration::from_micros(received.saturating_sub(sent)));
            seen.last_delivery = Some(Instant::now());
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_values_round_trip() {
        let v = event_value(7, 123_456, 256);
        assert_eq!(v.len(), 256);
        assert_eq!(parse_event_value(&v), Some((7, 123_456)));
        assert_eq!(
            event_value(1, 2, 8).len(),
            HEADER,
            "never shorter than the header"
        );
    }

    #[test]
    fn foreign_values_are_rejected() {
        assert_eq!(parse_event_value(b"short"), None);
        assert_eq!(parse_event_value(&[b'z'; 40]), None);
        assert_eq!(parse_event_value(&[0xff; 40]), None);
    }

    #[test]
    fn clock_is_monotonic() {
        let a = now_us();
        let b = now_us();
        assert!(b >= a);
    }
}
