//! Runs one case against a set of endpoints: opens the connections, prepares one worker
//! per client, and drives them in a closed loop bounded by count and time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::channel::mpsc;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use skiff_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use skiff_proto::etcdserverpb::kv_client::KvClient;
use skiff_proto::etcdserverpb::request_op::Request;
use skiff_proto::etcdserverpb::response_op::Response;
use skiff_proto::etcdserverpb::{
    Compare, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use tonic::Streaming;

use super::conn::{kv, lease, Conn};
use super::cpu::CpuSample;
use super::keys::{prefix_end, value, KeySpace};
use super::report::CaseResult;
use super::stats::Recorder;
use super::watch::run_watch;
use super::workload::{Case, Params, Workload};

/// Prefix of the keys that put, range and txn use.
pub const KV_PREFIX: &str = "k/";
/// TTL of the leases of the keep-alive case, long enough to outlive it.
const LEASE_TTL_SECS: i64 = 600;
/// Clients writing the key space before range cases and for the RSS load.
const LOAD_CLIENTS: usize = 64;
/// Upper bound on a load of the key space.
const LOAD_MAX_DURATION: Duration = Duration::from_secs(600);

/// The endpoints of one target and what has been done to them across cases.
#[derive(Debug, Clone)]
pub struct Session {
    /// Client URLs; connections are spread over them round-robin.
    pub endpoints: Vec<String>,
    /// Parameters of every case.
    pub params: Params,
    /// Whether the key space has been written (range cases need it).
    pub loaded: bool,
    /// The servers' processes, when known (clusters this benchmark started): their CPU
    /// time per request is then reported.
    pub server_pids: Vec<u32>,
}

impl Session {
    /// A session on `endpoints` with `params`.
    pub fn new(endpoints: Vec<String>, params: Params) -> Self {
        Self {
            endpoints,
            params,
            loaded: false,
            server_pids: Vec::new(),
        }
    }

    /// The key space of the put, range and txn cases.
    ///
    /// # Errors
    /// When the key size cannot hold the key space (see [`KeySpace::new`]).
    pub fn keys(&self) -> Result<KeySpace> {
        KeySpace::new(KV_PREFIX, self.params.key_size, self.params.key_space)
    }
}

/// Opens `n` connections, connection `i` to endpoint `i % endpoints.len()`.
///
/// # Errors
/// When there are no endpoints or a connection fails.
pub async fn open_channels(endpoints: &[String], n: usize) -> Result<Vec<Conn>> {
    if endpoints.is_empty() {
        bail!("no endpoints");
    }
    let mut channels = Vec::with_capacity(n);
    for i in 0..n.max(1) {
        channels.push(Conn::connect(&endpoints[i % endpoints.len()]).await?);
    }
    Ok(channels)
}

/// Runs `case` on the session's endpoints. Range cases first write the whole key space
/// once per session (not measured).
///
/// # Errors
/// When connections or the setup of the case fail; failures of measured requests are
/// counted in the result instead.
pub async fn run_case(session: &mut Session, case: Case) -> Result<CaseResult> {
    let params = session.params.clone();
    if case.workload == Workload::Watch {
        return run_watch(&session.endpoints, &params, case).await;
    }
    let keys = session.keys()?;
    if matches!(
        case.workload,
        Workload::RangeLinearizable | Workload::RangeSerializable | Workload::TxnPut
    ) && !session.loaded
    {
        load_keys(&session.endpoints, &params, keys.size()).await?;
        session.loaded = true;
    }
    let channels = open_channels(&session.endpoints, params.connections.min(case.clients)).await?;
    let mut workers = Vec::with_capacity(case.clients);
    for c in 0..case.clients {
        let channel = channels[c % channels.len()].clone();
        workers.push(
            tokio::time::timeout(
                params.op_timeout,
                Worker::prepare(case.workload, channel, &keys, &params, c, case.clients),
            )
            .await
            .map_err(|_| anyhow!("setting up client {c} of {case} timed out"))??,
        );
    }
    let cpu_before = CpuSample::take(&session.server_pids);
    let (recorder, elapsed, workers) = drive(
        workers,
        params.total,
        params.max_duration,
        params.op_timeout,
    )
    .await;
    let cpu = cpu_before.per_op(&CpuSample::take(&session.server_pids), recorder.ops());
    let mut note = String::new();
    if case.workload == Workload::TxnPut {
        let conflicts: u64 = workers.iter().map(Worker::conflicts).sum();
        note = format!("{conflicts} compares failed");
    }
    if case.workload == Workload::LeaseKeepAlive {
        revoke_leases(&workers).await;
    }
    let mut result = CaseResult::new(case, recorder.summary(elapsed), note);
    result.cpu = cpu;
    Ok(result)
}

/// Writes keys `0..count` of the key space once each (sequentially numbered, by
/// `LOAD_CLIENTS` clients), e.g. to fill a store before reads or before measuring RSS.
///
/// # Errors
/// When the setup fails, or any write failed or the load did not finish in time.
pub async fn load_keys(endpoints: &[String], params: &Params, count: u64) -> Result<()> {
    let keys = KeySpace::new(KV_PREFIX, params.key_size, count.max(1))?;
    let channels = open_channels(endpoints, params.connections.min(LOAD_CLIENTS)).await?;
    let workers = (0..LOAD_CLIENTS)
        .map(|c| Worker::Put {
            kv: kv(channels[c % channels.len()].clone()),
            keys: keys.clone(),
            value: value(params.value_size, b"load"),
            rng: None,
        })
        .collect();
    let (rec, elapsed, _) = drive(workers, count, LOAD_MAX_DURATION, params.op_timeout).await;
    if rec.errors() > 0 || rec.ops() < count {
        bail!(
            "loading {count} keys: {} written, {} failed in {elapsed:?}",
            rec.ops(),
            rec.errors()
        );
    }
    Ok(())
}

/// Runs every worker in its own task until `total` operations were issued in all or
/// `max_duration` passed; returns the merged latencies, the wall time and the workers.
async fn drive(
    workers: Vec<Worker>,
    total: u64,
    max_duration: Duration,
    op_timeout: Duration,
) -> (Recorder, Duration, Vec<Worker>) {
    let issued = Arc::new(AtomicU64::new(0));
    // The histograms are allocated (and their pages touched) before the clock starts: at
    // 256 clients that is tens of MiB, which would otherwise count against the first
    // milliseconds of a short case.
    let recorders: Vec<Recorder> = workers.iter().map(|_| Recorder::new()).collect();
    let start = Instant::now();
    let deadline = start + max_duration;
    let tasks: Vec<_> = workers
        .into_iter()
        .zip(recorders)
        .map(|(mut worker, mut rec)| {
            let issued = issued.clone();
            tokio::spawn(async move {
                loop {
                    let n = issued.fetch_add(1, Ordering::Relaxed);
                    if n >= total || Instant::now() >= deadline {
                        break;
                    }
                    let t = Instant::now();
                    match tokio::time::timeout(op_timeout, worker.op(n)).await {
                        Ok(Ok(())) => rec.record(t.elapsed()),
                        _ => rec.error(),
                    }
                }
                (rec, worker)
            })
        })
        .collect();
    let mut merged = Recorder::new();
    let mut workers = Vec::new();
    for task in tasks {
        match task.await {
            Ok((rec, worker)) => {
                merged.merge(&rec);
                workers.push(worker);
            }
            // A worker task never panics by design; count a lost one as an error.
            Err(_) => merged.error(),
        }
    }
    (merged, start.elapsed(), workers)
}

/// The state of one client of a case.
enum Worker {
    /// Puts random keys, or key `n` for operation `n` when `rng` is `None` (loading).
    Put {
        kv: KvClient<Conn>,
        keys: KeySpace,
        value: Vec<u8>,
        rng: Option<SmallRng>,
    },
    Range {
        kv: KvClient<Conn>,
        keys: KeySpace,
        serializable: bool,
        rng: SmallRng,
    },
    /// Compare-and-put on its own slice `[lo, hi)` of the key space, knowing the
    /// mod_revision of each key it saw.
    Txn {
        kv: KvClient<Conn>,
        keys: KeySpace,
        lo: u64,
        hi: u64,
        value: Vec<u8>,
        revisions: HashMap<Vec<u8>, i64>,
        conflicts: u64,
        rng: SmallRng,
    },
    Lease {
        id: i64,
        channel: Conn,
        requests: mpsc::UnboundedSender<LeaseKeepAliveRequest>,
        responses: Streaming<LeaseKeepAliveResponse>,
    },
}

impl Worker {
    /// Sets up client `c` of `clients` for `workload` (unmeasured: leases granted, txn
    /// revisions read).
    async fn prepare(
        workload: Workload,
        channel: Conn,
        keys: &KeySpace,
        params: &Params,
        c: usize,
        clients: usize,
    ) -> Result<Worker> {
        let rng = SmallRng::seed_from_u64(c as u64 + 1);
        Ok(match workload {
            Workload::Put => Worker::Put {
                kv: kv(channel),
                keys: keys.clone(),
                value: value(params.value_size, b"put"),
                rng: Some(rng),
            },
            Workload::RangeLinearizable | Workload::RangeSerializable => Worker::Range {
                kv: kv(channel),
                keys: keys.clone(),
                serializable: workload == Workload::RangeSerializable,
                rng,
            },
            Workload::TxnPut => {
                let (lo, hi) = slice_of(keys.size(), c as u64, clients as u64);
                let mut client = kv(channel);
                let range_end = if hi >= keys.size() {
                    prefix_end(keys.prefix())
                } else {
                    keys.key(hi)
                };
                let resp = client
                    .range(RangeRequest {
                        key: keys.key(lo),
                        range_end,
                        keys_only: true,
                        ..Default::default()
                    })
                    .await
                    .context("reading the revisions of the txn slice")?
                    .into_inner();
                let revisions = resp
                    .kvs
                    .into_iter()
                    .map(|kv| (kv.key, kv.mod_revision))
                    .collect();
                Worker::Txn {
                    kv: client,
                    keys: keys.clone(),
                    lo,
                    hi,
                    value: value(params.value_size, b"txn"),
                    revisions,
                    conflicts: 0,
                    rng,
                }
            }
            Workload::LeaseKeepAlive => {
                let id = lease(channel.clone())
                    .lease_grant(LeaseGrantRequest {
                        ttl: LEASE_TTL_SECS,
                        id: 0,
                    })
                    .await
                    .context("granting a lease")?
                    .into_inner()
                    .id;
                // etcd sends the stream's response headers only with its first answer, and
                // the call returns only after the headers: queue one keep-alive before
                // opening, and take its answer here, unmeasured.
                let (requests, rx) = mpsc::unbounded();
                requests
                    .unbounded_send(LeaseKeepAliveRequest { id })
                    .map_err(|_| anyhow!("keep-alive channel closed"))?;
                let mut responses = lease(channel.clone())
                    .lease_keep_alive(rx)
                    .await
                    .context("opening a keep-alive stream")?
                    .into_inner();
                responses
                    .message()
                    .await
                    .context("first keep-alive")?
                    .ok_or_else(|| anyhow!("keep-alive stream ended at once"))?;
                Worker::Lease {
                    id,
                    channel,
                    requests,
                    responses,
                }
            }
            Workload::Watch => bail!("the watch case has no per-client worker"),
        })
    }

    /// Operation number `n` of the case.
    async fn op(&mut self, n: u64) -> Result<()> {
        match self {
            Worker::Put {
                kv,
                keys,
                value,
                rng,
            } => {
                let i = match rng {
                    Some(rng) => rng.random_range(0..keys.size()),
                    None => n,
                };
                kv.put(PutRequest {
                    key: keys.key(i),
                    value: value.clone(),
                    ..Default::default()
                })
                .await?;
            }
            Worker::Range {
                kv,
                keys,
                serializable,
                rng,
            } => {
                let resp = kv
                    .range(RangeRequest {
                        key: keys.key(rng.random_range(0..keys.size())),
                        serializable: *serializable,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                if resp.kvs.is_empty() {
                    bail!("range found no value for a loaded key");
                }
            }
            Worker::Txn {
                kv,
                keys,
                lo,
                hi,
                value,
                revisions,
                conflicts,
                rng,
            } => {
                let key = keys.key(rng.random_range(*lo..*hi));
                let expected = revisions.get(&key).copied().unwrap_or(0);
                let resp = kv
                    .txn(compare_and_put(key.clone(), expected, value.clone()))
                    .await?
                    .into_inner();
                let revision = if resp.succeeded {
                    resp.header.map(|h| h.revision)
                } else {
                    *conflicts += 1;
                    match resp.responses.into_iter().next().and_then(|r| r.response) {
                        Some(Response::ResponseRange(r)) => {
                            Some(r.kvs.first().map_or(0, |kv| kv.mod_revision))
                        }
                        _ => None,
                    }
                };
                let revision = revision.ok_or_else(|| anyhow!("txn response without revision"))?;
                revisions.insert(key, revision);
            }
            Worker::Lease {
                id,
                requests,
                responses,
                ..
            } => {
                requests
                    .unbounded_send(LeaseKeepAliveRequest { id: *id })
                    .map_err(|_| anyhow!("keep-alive stream closed"))?;
                let resp = responses
                    .message()
                    .await?
                    .ok_or_else(|| anyhow!("keep-alive stream ended"))?;
                if resp.ttl <= 0 {
                    bail!("lease {id} expired");
                }
            }
        }
        Ok(())
    }

    fn conflicts(&self) -> u64 {
        match self {
            Worker::Txn { conflicts, .. } => *conflicts,
            _ => 0,
        }
    }
}

/// `[lo, hi)`: the slice of a key space of `size` keys owned by client `c` of `clients`.
/// Slices are disjoint while `clients <= size`; beyond that clients share single keys.
fn slice_of(size: u64, c: u64, clients: u64) -> (u64, u64) {
    let span = (size / clients.max(1)).max(1);
    let lo = (c * span) % size.max(1);
    (lo, (lo + span).min(size.max(1)))
}

/// `if mod_revision(key) == expected then put(key, value) else range(key)`.
fn compare_and_put(key: Vec<u8>, expected: i64, value: Vec<u8>) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Mod as i32,
            key: key.clone(),
            range_end: Vec::new(),
            target_union: Some(TargetUnion::ModRevision(expected)),
        }],
        success: vec![RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: key.clone(),
                value,
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key,
                ..Default::default()
            })),
        }],
    }
}

/// Revokes the leases of keep-alive workers, so a reused server does not keep them.
async fn revoke_leases(workers: &[Worker]) {
    for w in workers {
        if let Worker::Lease { id, channel, .. } = w {
            // Best effort: the lease expires on its own after LEASE_TTL_SECS anyway.
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                lease(channel.clone()).lease_revoke(LeaseRevokeRequest { id: *id }),
            )
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_disjoint_and_cover() {
        let slices: Vec<_> = (0..4).map(|c| slice_of(10, c, 4)).collect();
        assert_eq!(slices, vec![(0, 2), (2, 4), (4, 6), (6, 8)]);
        assert_eq!(
            slice_of(3, 5, 8),
            (2, 3),
            "more clients than keys share keys"
        );
        assert_eq!(slice_of(1, 0, 1), (0, 1));
    }

    #[test]
    fn compare_and_put_shape() {
        let t = compare_and_put(b"k".to_vec(), 7, b"v".to_vec());
        assert_eq!(t.compare.len(), 1);
        assert_eq!(t.compare[0].target_union, Some(TargetUnion::ModRevision(7)));
        assert!(matches!(t.success[0].request, Some(Request::RequestPut(_))));
        assert!(matches!(
            t.failure[0].request,
            Some(Request::RequestRange(_))
        ));
    }
}
