//! The lease workload: keys attached to leases vanish only after expiry or
//! revoke.
//!
//! Half the clients (at least one) are *lessees*. A cycle of a lessee:
//!
//! 1. **grant** a lease with a TTL of 2–4 s (key: the lease's label
//!    `w<worker>-<n>`);
//! 2. **put** 1–3 unique keys `<label>/k<j>` attached to it (stored under
//!    `/sjp/lease/`; the value is the lease id);
//! 3. one of three fates: **keep it alive** (a keep-alive every third of
//!    the TTL for 1–3 TTLs, then stop and let it expire), **revoke** it
//!    after up to half its TTL, or **let it expire** untouched. Sometimes
//!    the lessee first deletes one of its keys itself.
//!
//! The other clients are *readers*: they poll single keys with
//! linearizable gets, mostly recently attached ones. After the generation
//! phase and the heal, the workload waits until every lease must have
//! ended and reads every key once more (they must all be gone).
//!
//! The lease checker judges the reads against the grants, keep-alives and
//! revokes; the fault windows (nemesis log and the final heal) go to it in
//! [`Output::fault_windows`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;

use super::{complete_error, pace, parse_i64, spawn_workers, Ctx, Output};
use crate::client::Client;
use crate::history::{EventType, Grant, KeepAlive, Op};
use crate::recorder::{NemesisPhase, NemesisRecord, Recorder};

/// The TTLs requested (seconds).
pub const TTLS: std::ops::RangeInclusive<i64> = 2..=4;
/// Keys remembered for the readers (and the final reads).
const MAX_TRACKED: usize = 400;
/// The prefix of the stored keys.
const PREFIX: &str = "/sjp/lease/";

/// Keys attached so far, newest last (bounded by [`MAX_TRACKED`]).
type Tracked = Arc<Mutex<VecDeque<String>>>;

/// Runs the workload.
///
/// # Errors
/// If a client task panicked.
pub async fn run(ctx: Arc<Ctx>) -> anyhow::Result<Output> {
    let tracked: Tracked = Arc::new(Mutex::new(VecDeque::new()));
    let lessees = (ctx.concurrency / 2).max(1);
    let n = ctx.concurrency.max(lessees + 1);
    let t = tracked.clone();
    spawn_workers(&ctx, n, move |ctx, w| {
        let tracked = t.clone();
        async move {
            if w < lessees {
                lessee(ctx, w, tracked).await
            } else {
                reader(ctx, w, tracked).await
            }
        }
    })
    .await?;
    let generation_end = ctx.recorder.now();
    ctx.wait_healed().await;
    let healed_at = ctx.recorder.now();
    // Every lease must end by its last renewal + 3 × TTL + 1 s (the
    // checker's default grace); wait that long past the heal (the last
    // fault), then read every key.
    let max_ttl = u64::try_from(*TTLS.end()).unwrap_or(4);
    tokio::time::sleep(Duration::from_secs(3 * max_ttl + 2)).await;
    let keys: Vec<String> = lock(&tracked).iter().cloned().collect();
    for key in keys {
        let stored = format!("{PREFIX}{key}");
        let _ = super::final_read(&ctx, &key, 3, Op::Read(None), |c: Client| {
            let stored = stored.clone();
            async move {
                let (kv, _) = c.get(&stored).await?;
                let v = kv.and_then(|kv| parse_i64(&kv.value));
                Ok(((), Op::Read(v)))
            }
        })
        .await;
    }
    let (_, nemesis) = ctx.recorder.snapshot();
    let mut windows = fault_windows(&nemesis);
    // The final heal (from the end of generation to the heal signal) may
    // also have changed leaders.
    windows.push((generation_end, healed_at));
    Ok(Output {
        fault_windows: windows,
        ..Output::default()
    })
}

/// Pairs each fault's start with the next stop (a start without a stop
/// lasts to the end of time).
pub fn fault_windows(log: &[NemesisRecord]) -> Vec<(u64, u64)> {
    let mut windows = Vec::new();
    let mut open: Option<u64> = None;
    for r in log {
        match r.phase {
            NemesisPhase::Start => {
                open.get_or_insert(r.time);
            }
            NemesisPhase::Stop => {
                if let Some(start) = open.take() {
                    windows.push((start, r.time));
                }
            }
        }
    }
    if let Some(start) = open {
        windows.push((start, u64::MAX));
    }
    windows
}

fn lock(t: &Tracked) -> std::sync::MutexGuard<'_, VecDeque<String>> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

fn track(t: &Tracked, key: String) {
    let mut keys = lock(t);
    keys.push_back(key);
    while keys.len() > MAX_TRACKED {
        keys.pop_front();
    }
}

/// Sleeps `d`, or less if the run ends first (checked every 100 ms).
async fn sleep_while_running(rec: &Recorder, d: Duration) {
    let until = tokio::time::Instant::now() + d;
    // Bounded: at most d / 100 ms rounds.
    while !rec.done() && tokio::time::Instant::now() < until {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        tokio::time::sleep(left.min(Duration::from_millis(100))).await;
    }
}

enum Fate {
    KeepAlive,
    Revoke,
    Expire,
}

async fn lessee(ctx: Arc<Ctx>, w: usize, tracked: Tracked) {
    let rec = ctx.recorder.clone();
    let client = ctx.client_for(w).clone();
    let mut rng = ctx.rng(w);
    let mut process = rec.new_process();
    // Bounded: every cycle invokes at least one operation, and `invoke`
    // refuses once the run is done.
    for n in 0u64.. {
        let label = format!("w{w}-{n}");
        let ttl = rng.random_range(TTLS);
        let grant = Grant {
            ttl,
            lease: None,
            granted_ttl: None,
        };
        if !rec.invoke(process, &label, Op::LeaseGrant(grant)) {
            break;
        }
        let (lease, granted) = match client.lease_grant_with_ttl(ttl).await {
            Ok((id, granted)) => {
                let done = Grant {
                    lease: Some(id),
                    granted_ttl: Some(granted),
                    ..grant
                };
                rec.complete(process, EventType::Ok, &label, Op::LeaseGrant(done), None);
                (id, granted)
            }
            Err(e) => {
                process = complete_error(&rec, process, &label, Op::LeaseGrant(grant), &e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut keys = Vec::new();
        for j in 0..rng.random_range(1..=3) {
            let key = format!("{label}/k{j}");
            if !rec.invoke(process, &key, Op::LeasePut(lease)) {
                break;
            }
            match client
                .put(&format!("{PREFIX}{key}"), &lease.to_string(), lease)
                .await
            {
                Ok(_) => {
                    rec.complete(process, EventType::Ok, &key, Op::LeasePut(lease), None);
                    track(&tracked, key.clone());
                    keys.push(key);
                }
                Err(e) => {
                    let next = complete_error(&rec, process, &key, Op::LeasePut(lease), &e);
                    if next != process {
                        track(&tracked, key.clone());
                    }
                    process = next;
                }
            }
        }
        let fate = match rng.random_range(0..3) {
            0 => Fate::KeepAlive,
            1 => Fate::Revoke,
            _ => Fate::Expire,
        };
        if !keys.is_empty() && rng.random_bool(0.1) {
            let key = keys[rng.random_range(0..keys.len())].clone();
            if rec.invoke(process, &key, Op::Delete(lease)) {
                match client.delete(&format!("{PREFIX}{key}")).await {
                    Ok(_) => rec.complete(process, EventType::Ok, &key, Op::Delete(lease), None),
                    Err(e) => process = complete_error(&rec, process, &key, Op::Delete(lease), &e),
                }
            }
        }
        let ttl_ms = u64::try_from(granted.max(1)).unwrap_or(2) * 1000;
        match fate {
            Fate::KeepAlive => {
                process = keep_alive(&rec, &client, &mut rng, process, &label, lease, ttl_ms).await
            }
            Fate::Revoke => {
                let wait = rng.random_range(0..=ttl_ms / 2);
                sleep_while_running(&rec, Duration::from_millis(wait)).await;
                if rec.invoke(process, &label, Op::LeaseRevoke(lease)) {
                    match client.lease_revoke(lease).await {
                        Ok(()) => rec.complete(
                            process,
                            EventType::Ok,
                            &label,
                            Op::LeaseRevoke(lease),
                            None,
                        ),
                        Err(e) => {
                            process =
                                complete_error(&rec, process, &label, Op::LeaseRevoke(lease), &e)
                        }
                    }
                }
            }
            Fate::Expire => {}
        }
        pace(&mut rng, 200).await;
    }
}

/// Keeps a lease alive every third of its TTL for 1–3 TTLs; returns the
/// process to use next.
async fn keep_alive(
    rec: &Recorder,
    client: &Client,
    rng: &mut StdRng,
    mut process: u64,
    label: &str,
    lease: i64,
    ttl_ms: u64,
) -> u64 {
    let rounds = 3 * rng.random_range(1..=3);
    for _ in 0..rounds {
        sleep_while_running(rec, Duration::from_millis(ttl_ms / 3)).await;
        let ka = KeepAlive { lease, ttl: None };
        if !rec.invoke(process, label, Op::LeaseKeepAlive(ka)) {
            break;
        }
        match client.lease_keep_alive_once(lease).await {
            Ok(ttl) => {
                let done = KeepAlive {
                    ttl: Some(ttl),
                    ..ka
                };
                rec.complete(
                    process,
                    EventType::Ok,
                    label,
                    Op::LeaseKeepAlive(done),
                    None,
                );
                if ttl <= 0 {
                    break;
                }
            }
            Err(e) => {
                process = complete_error(rec, process, label, Op::LeaseKeepAlive(ka), &e);
            }
        }
    }
    process
}

async fn reader(ctx: Arc<Ctx>, w: usize, tracked: Tracked) {
    let rec = ctx.recorder.clone();
    let client = ctx.client_for(w).clone();
    let mut rng = ctx.rng(w);
    let process = rec.new_process();
    // Bounded: every round invokes an operation or sleeps, and `invoke`
    // refuses once the run is done.
    while !rec.done() {
        let key = {
            let keys = lock(&tracked);
            if keys.is_empty() {
                None
            } else {
                // Mostly the 20 newest keys, sometimes any.
                let newest = keys.len().saturating_sub(20);
                let from = if rng.random_bool(0.8) { newest } else { 0 };
                keys.get(rng.random_range(from..keys.len())).cloned()
            }
        };
        let Some(key) = key else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if !rec.invoke(process, &key, Op::Read(None)) {
            break;
        }
        match client.get(&format!("{PREFIX}{key}")).await {
            Ok((kv, _)) => {
                let v = kv.and_then(|kv| parse_i64(&kv.value));
                rec.complete(process, EventType::Ok, &key, Op::Read(v), None)
            }
            // Reads have no effect: a failed read is `fail`.
            Err(e) => rec.complete(
                process,
                EventType::Fail,
                &key,
                Op::Read(None),
                Some(e.to_string()),
            ),
        }
        pace(&mut rng, 20).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(time: u64, phase: NemesisPhase) -> NemesisRecord {
        NemesisRecord {
            time,
            phase,
            fault: "kill".into(),
            description: String::new(),
            nodes: vec![],
        }
    }

    #[test]
    fn fault_windows_pair_starts_and_stops() {
        use NemesisPhase::*;
        let log = [rec(1, Start), rec(5, Stop), rec(7, Stop), rec(9, Start)];
        assert_eq!(fault_windows(&log), vec![(1, 5), (9, u64::MAX)]);
        assert!(fault_windows(&[]).is_empty());
    }
}
